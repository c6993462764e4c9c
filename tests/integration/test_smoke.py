"""The harness itself: a real worker answers a real check through real Redis."""

import time

import pytest

pytestmark = pytest.mark.integration


def test_check_order_round_trip_through_a_real_worker(app, rt, session_worker):
    # given
    from decimal import Decimal

    from risk_tasks.engine.model import SymbolSpec

    rt.store.put_symbols([SymbolSpec("BTC", Decimal("0.1"), Decimal("0.05"))])
    rt.store.upsert_account({"account_id": "A", "balance": Decimal(1000)})
    rt.store.ingest_prices({"BTC": Decimal(100)}, time.time())
    order = {"order_id": "o-1", "account_id": "A", "symbol": "BTC", "side": "BUY",
             "quantity": 1, "order_type": "MARKET"}
    # when
    result = app.send_task("risk.check_order", [order]).get(timeout=10)
    # then
    assert result["approved"] is True
    assert result["post_trade_metrics"]["notional"] == 100.0
