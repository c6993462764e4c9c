"""``RiskClient``, the library a trading service calls: decisions from a live worker,
a fail-closed ``risk_timeout`` when no worker answers, and coalesced batches.

Tests that need to know which workers consume the pretrade queue (none, or exactly one)
use a private broker, so the session worker cannot answer in their place.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from celery.exceptions import TimeoutError as CeleryTimeout

from risk_tasks.client import RiskClient
from risk_tasks.engine.model import TradingState
from risk_tasks.state import keys
from tests.integration.helpers import wait_until

pytestmark = pytest.mark.integration

HANG_MARGIN = 2.0  # seconds past its timeout after which a call counts as hung


@pytest.fixture()
def market(world):  # noqa: ANN001, ANN201
    """BTC at 100 (10x), the default policies, account A with 1 000 000."""
    world.default_policies()
    world.symbol("BTC")
    world.prices({"BTC": 100})
    world.account("A", 1_000_000)
    return world


def timed(call, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN201
    started = time.monotonic()
    result = call(*args, **kwargs)
    return result, time.monotonic() - started


def assert_fail_closed(result: dict, order: dict) -> None:
    assert result["approved"] is False
    assert result["rejection_reason"] == "risk_timeout"
    assert result["client_side"] is True
    assert result["order_id"] == order["order_id"]
    assert "no risk decision" in result["message"]


# -- A LIVE WORKER --

def test_client_returns_the_workers_decisions(market, session_worker):
    # given
    approved, unknown = market.order(quantity=3), market.order(symbol="DOGE")
    with RiskClient(timeout=10) as client:
        # when
        first = client.check_order(approved)
        second = client.check_order(unknown)
        invalid = client.check_order({"order_id": "bad-1", "quantity": "NaN"})
        retried = client.check_order(approved)
    # then
    assert first["approved"] is True and "client_side" not in first
    assert first["order_id"] == approved["order_id"]
    assert first["post_trade_metrics"]["notional"] == 300.0
    assert second["rejection_reason"] == "unknown_symbol"
    assert invalid["rejection_reason"] == "invalid_request"
    assert retried == first


def test_check_orders_returns_one_decision_per_order_in_order(market, session_worker):
    # given
    orders = [market.order(quantity=1), {"order_id": "bad-1"}, market.order(symbol="DOGE"),
              market.order(account_id="nobody"), market.order(quantity=2)]
    with RiskClient(timeout=10) as client:
        # when
        results = client.check_orders(orders)
    # then
    assert [r["order_id"] for r in results] == [o["order_id"] for o in orders]
    assert [r["rejection_reason"] for r in results] == [
        None, "invalid_request", "unknown_symbol", "unknown_account", None]
    assert [r["post_trade_metrics"].get("notional") for r in results] == \
        [100.0, None, None, None, 200.0]


def test_get_risk_metrics_returns_the_accounts_metrics(market, session_worker):
    with RiskClient(timeout=10) as client:
        metrics = client.get_risk_metrics("A")
        unknown = client.get_risk_metrics("nobody")
    assert metrics["account_id"] == "A" and metrics["equity"] == 1_000_000.0
    assert unknown["error"] == "unknown_account"


# -- NO WORKER --

def test_without_a_worker_every_call_fails_closed_within_its_timeout(market, private_broker):
    # given: nobody consumes the private broker's pretrade queue
    timeout = 0.5
    order = market.order()
    orders = [market.order(), market.order()]
    # when
    with RiskClient(app=private_broker.app, timeout=timeout) as client:
        single, single_took = timed(client.check_order, order)
        batch, batch_took = timed(client.check_orders, orders)
    with RiskClient(app=private_broker.app, timeout=timeout, coalesce=True) as coalescing:
        coalesced, coalesced_took = timed(coalescing.check_order, orders[0])
    # then: rejections made by the client itself, without hanging
    assert_fail_closed(single, order)
    assert [r["order_id"] for r in batch] == [o["order_id"] for o in orders]
    for result, sent in zip(batch, orders):
        assert_fail_closed(result, sent)
    assert_fail_closed(coalesced, orders[0])
    for took in (single_took, batch_took, coalesced_took):
        assert took < timeout + HANG_MARGIN
    # and the messages wait, unanswered, on the private broker
    assert private_broker.queue_length("pretrade") == 3
    # and metrics, which have no fail-closed answer, raise a timeout instead
    with RiskClient(app=private_broker.app, timeout=timeout) as client:
        with pytest.raises(CeleryTimeout):
            client.get_risk_metrics("A")


def test_with_the_broker_unreachable_every_call_fails_closed_within_its_timeout(market):
    """The result backend answers but nothing listens where the broker should be: each
    call is a ``risk_unavailable`` rejection of the client's own, in about its timeout
    (the publish is retried until then, not for kombu's or redis-py's own back-off)."""
    from celery import Celery

    # given: a broker address with nothing behind it (port 1: a free port from the
    # ephemeral range could be the connection's own source port, and connect to itself)
    app = Celery("risk-dead-broker", set_as_current=False)
    app.config_from_object("celeryconfig")
    app.conf.update(broker_url="redis://127.0.0.1:1/0")
    timeout = 0.5
    order, orders = market.order(), [market.order(), market.order()]
    # when
    with RiskClient(app=app, timeout=timeout) as client:
        single, single_took = timed(client.check_order, order)
        batch, batch_took = timed(client.check_orders, orders)
    with RiskClient(app=app, timeout=timeout, coalesce=True) as coalescing:
        coalesced, coalesced_took = timed(coalescing.check_order, orders[0])
    # then
    for result, sent in [(single, order), *zip(batch, orders), (coalesced, orders[0])]:
        assert result["approved"] is False
        assert result["rejection_reason"] == "risk_unavailable", result
        assert result["client_side"] is True
        assert result["order_id"] == sent["order_id"]
        assert "risk engine unavailable" in result["message"]
    for took in (single_took, batch_took, coalesced_took):
        assert took < timeout + HANG_MARGIN


def test_with_the_broker_hung_a_call_fails_closed_within_its_timeout(market):
    """A broker that accepts connections but never answers (a frozen Redis): the push
    times out with the caller's patience, not with the transport's 10 s socket
    timeout."""
    import os
    import signal

    from celery import Celery

    from tests.support.services import RedisServer

    # given: the broker's Redis stopped (SIGSTOP) while the result backend answers
    broker = RedisServer().start()
    app = Celery("risk-hung-broker", set_as_current=False)
    app.config_from_object("celeryconfig")
    app.conf.update(broker_url=broker.url(0))
    timeout = 0.5
    order = market.order()
    try:
        with RiskClient(app=app, timeout=timeout) as client:
            client.check_order(market.order())  # connected while the broker answered
            os.kill(broker.process.pid, signal.SIGSTOP)
            try:
                # when
                result, took = timed(client.check_order, order)
            finally:
                os.kill(broker.process.pid, signal.SIGCONT)
    finally:
        broker.stop()
    # then
    assert result["approved"] is False and result["client_side"] is True
    assert result["rejection_reason"] in ("risk_unavailable", "risk_timeout"), result
    assert result["order_id"] == order["order_id"]
    assert took < timeout + HANG_MARGIN


def test_a_check_its_client_gave_up_on_is_never_decided_later(market, private_broker):
    # given: a check that timed out while no worker was there
    order = market.order()
    with RiskClient(app=private_broker.app, timeout=0.5) as client:
        assert client.check_order(order)["rejection_reason"] == "risk_timeout"
        # and the account halted before any worker comes
        market.account_state("A", TradingState.HALTED)
        # when: a worker starts and takes the expired message off the queue
        private_broker.start_worker(queues="pretrade")
        wait_until(lambda: private_broker.queue_length("pretrade") == 0,
                   message="the pretrade queue drained")
        # then: the expired check was dropped, not decided
        assert not market.rt.redis.exists(keys.idempotency("A", order["order_id"]))
        # and the client's retry gets a decision made now
        retry = client.check_order(order, timeout=20)
    assert retry["rejection_reason"] == "account_halted"


# -- COALESCING --

def test_coalescing_client_answers_each_of_twenty_threads_with_its_own_decision(
        market, private_broker):
    # given: one pretrade worker, and 20 threads that call at the same moment
    worker = private_broker.start_worker(queues="pretrade")
    callers = 20
    orders = [market.order(quantity=n + 1) for n in range(callers)]
    barrier = threading.Barrier(callers)
    with RiskClient(app=private_broker.app, timeout=20, coalesce=True, window=0.05) as client:

        def call(order: dict) -> dict:
            barrier.wait(timeout=20)
            return client.check_order(order)

        # when
        with ThreadPoolExecutor(max_workers=callers) as pool:
            results = list(pool.map(call, orders))
    # then: each caller got the decision of its own order
    for order, result in zip(orders, results):
        assert result["order_id"] == order["order_id"], (order, result)
        assert result["approved"] is True, result
        assert result["post_trade_metrics"]["notional"] == order["quantity"] * 100.0
    # and the worker took fewer messages than there were orders, all of them batches
    stats = private_broker.app.control.inspect(destination=[worker.hostname],
                                               timeout=5).stats()
    totals = stats[worker.hostname]["total"]
    assert set(totals) == {"risk.check_order_batch"}
    assert 1 <= totals["risk.check_order_batch"] < callers
