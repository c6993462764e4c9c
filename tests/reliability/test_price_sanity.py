"""Price sanity through a real ingest worker with ``RISK_PRICE_JUMP_FRACTION=0.2``: a tick
that jumps more than 20 % from the last good price is held back (and counted) until a
second tick confirms it; checks are priced on the last good price meanwhile; a stale
price is never used to approve an order, for the order's symbol or any symbol the
account holds. (tests/integration/test_pretrade_reasons.py covers a stale price of the
order's own symbol.)
"""

from __future__ import annotations

import time

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from risk_tasks.state import keys
from tests.integration.helpers import wait_until
from tests.support.services import free_port

pytestmark = pytest.mark.integration

STALE_SECONDS = 30  # RISK_PRICE_STALE_SECONDS of the test session


def price_ticks(port: int) -> dict[str, float]:
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return {s.labels["outcome"]: s.value for f in text_string_to_metric_families(text)
            for s in f.samples if s.name == "risk_price_ticks_total"}


@pytest.fixture()
def jump_worker(private_broker, tmp_path):  # noqa: ANN001, ANN201
    port = free_port()
    private_broker.start_worker(queues="ingest,pretrade", env={
        "RISK_PRICE_JUMP_FRACTION": "0.2", "RISK_METRICS_PORT": str(port),
        "RISK_METRICS_HOST": "127.0.0.1", "RISK_METRICS_DIR": str(tmp_path / "metrics")})

    def answers() -> bool:
        try:
            return requests.get(f"http://127.0.0.1:{port}/health", timeout=2).ok
        except requests.ConnectionError:
            return False

    wait_until(answers, timeout=20, message="the metrics endpoint")
    return private_broker.app, port


def test_a_jump_is_held_until_a_second_tick_confirms_it_and_is_counted(world, jump_worker):
    app, port = jump_worker
    world.default_policies()
    world.symbol("BTC")
    world.account("A", 1_000_000)

    def ingest(price: float, ts: float) -> dict:
        return app.send_task("risk.ingest_prices", [{"BTC": price}, ts]).get(timeout=20)

    def notional_of_one() -> float:
        order = world.order(quantity=1)
        result = app.send_task("risk.check_order", [order]).get(timeout=20)
        assert result["approved"] is True, result
        return result["post_trade_metrics"]["notional"]

    now = time.time()
    # given: a good price of 100
    assert ingest(100, now - 4)["accepted"] == 1
    # when: a tick 50 % away arrives
    held = ingest(150, now - 3)
    # then: it is held back, counted, and checks are still priced at 100
    assert (held["accepted"], held["held"]) == (0, 1)
    assert world.rt.redis.hget(keys.PRICES, "BTC").startswith(b"100|")
    assert notional_of_one() == 100.0
    # when: a second tick within 20 % of the held one confirms the move
    confirmed = ingest(152, now - 2)
    # then: the new price is used
    assert (confirmed["accepted"], confirmed["confirmed"]) == (1, 1)
    assert notional_of_one() == 152.0
    # when: a lone outlier, then the market carries on where it was
    assert ingest(40, now - 1)["held"] == 1
    back = ingest(151, now)
    # then: the outlier never became the mark, and it is forgotten
    assert (back["accepted"], back["confirmed"]) == (1, 0)
    assert notional_of_one() == 151.0
    assert not world.rt.redis.hexists(keys.PRICES_HELD, "BTC")
    # and every outcome is counted for operators
    counted = price_ticks(port)
    assert counted == {"accepted": 3.0, "held": 2.0, "confirmed": 1.0}, counted


def test_stale_price_of_a_held_symbol_blocks_an_order_that_adds_margin(world, session_worker):
    # given: A holds ETH, whose only price is stale; BTC is fresh
    world.default_policies()
    world.symbol("BTC")
    world.symbol("ETH")
    world.account("A", 1_000_000)
    world.prices({"ETH": 2_000}, ts=time.time() - 3 * STALE_SECONDS)
    world.fill("A", "ETH", "BUY", 1, 2_000)
    world.prices({"BTC": 100})
    # when: an order that adds margin in BTC, and one that reduces ETH
    adds = world.check(world.order(symbol="BTC", quantity=1))
    reduces = world.check(world.order(symbol="ETH", side="SELL", quantity=1))
    # then: no approval on the stale ETH mark
    assert (adds["approved"], adds["rejection_reason"]) == (False, "no_price")
    assert "ETH" in adds["message"]
    assert (reduces["approved"], reduces["rejection_reason"]) == (False, "no_price")
    # when: ETH is priced again
    world.prices({"ETH": 2_000})
    # then: the same order passes
    assert world.check(world.order(symbol="BTC", quantity=1))["approved"] is True
