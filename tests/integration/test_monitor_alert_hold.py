"""An alert whose message could not be sent is not silenced for the whole window: the
monitor claims a short hold before sending and stretches it only once sent."""

import time
from decimal import Decimal

import pytest

from risk_tasks import alerting
from risk_tasks.engine.model import Fill, Side, SymbolSpec
from risk_tasks.engine.policies import DEFAULT_POLICIES
from risk_tasks.engine.validation import validate_account
from risk_tasks.monitor import sweep as sweep_module
from risk_tasks.monitor.sweep import CLAIM_HOLD_SECONDS, ShardEvaluator
from risk_tasks.state import keys

pytestmark = pytest.mark.integration


def test_a_failed_send_leaves_only_the_short_hold(rt, monkeypatch):  # noqa: ANN001
    # given: an account past the daily drawdown warning (a soft policy)
    rt.store.put_symbols([SymbolSpec("BTC", Decimal("0.10"), Decimal("0.05"))])
    rt.store.put_policies(DEFAULT_POLICIES)
    rt.store.ingest_prices({"BTC": Decimal(100)}, time.time())
    rt.store.upsert_account(validate_account({
        "account_id": "HOLD", "balance": "10000", "daily_start_equity": "12000",
        "peak_equity": "12000"}))
    rt.store.apply_fill(Fill("hold-fill", "HOLD", "BTC", Side.BUY, Decimal(1), Decimal(100)))
    shard = keys.shard_of("HOLD", rt.settings.shards)

    # and a broker that fails while the monitor sends (an injected fault)
    def broker_gone(name, calls, batch=500):  # noqa: ANN001, ANN202
        if name == "risk.send_alert":
            raise ConnectionError("broker went away mid-batch")
        return 0

    monkeypatch.setattr(sweep_module, "send_many", broker_gone)
    # when
    with pytest.raises(ConnectionError):
        ShardEvaluator(rt).run(shard, time.time())
    # then: the alert's claim is the short hold, so a later tick raises it again
    key = alerting.dedup_key_of("policy_violation", "Daily Drawdown Warning", "HOLD")
    assert 0 < rt.redis.pttl(key) <= CLAIM_HOLD_SECONDS * 1000
