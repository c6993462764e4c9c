"""A pretrade worker killed in the middle of a stream of checks: every caller still gets
an answer in time (a decision, or the client's fail-closed ``risk_timeout``), a new
worker answers again, and a retried order id gets the decision that was stored.

The worker runs on a private broker, as the only consumer of its pretrade queue, and
without ack emulation, as DESIGN.md's pretrade workers do (at-most-once: a check lost
with its worker is failed closed by the client and retried under the same order id).
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import orjson
import pytest

from risk_tasks.client import RiskClient
from risk_tasks.engine.model import TradingState
from risk_tasks.state import keys
from tests.integration.helpers import wait_until

pytestmark = pytest.mark.integration

TIMEOUT = 1.0  # the client's timeout, seconds
HANG_MARGIN = 2.0  # seconds past the timeout after which a call counts as hung
PRETRADE_WORKER_ENV = {"RISK_BROKER_ACK_EMULATION": "0"}
ENGINE_REASONS = {None, "rate_limited"}  # what this stream's orders can be decided as


def test_killed_worker_leaves_no_caller_hanging_and_a_retry_gets_the_stored_decision(
        world, private_broker):
    # given: an account that can afford every order, and one pretrade worker
    world.default_policies()
    world.symbol("BTC")
    world.prices({"BTC": 100})
    world.account("A", 1_000_000_000)
    first_worker = private_broker.start_worker(queues="pretrade", env=PRETRADE_WORKER_ENV)
    outcomes: list[tuple[dict, dict, float]] = []  # (order, result, seconds taken)
    streaming = threading.Event()
    streaming.set()

    with RiskClient(app=private_broker.app, timeout=TIMEOUT) as client:

        def stream() -> None:
            while streaming.is_set():
                order = world.order()
                started = time.monotonic()
                result = client.check_order(order)
                outcomes.append((order, result, time.monotonic() - started))

        def count(predicate) -> int:  # noqa: ANN001
            return sum(1 for _, result, _ in list(outcomes) if predicate(result))

        with ThreadPoolExecutor(max_workers=3) as pool:
            streams = [pool.submit(stream) for _ in range(3)]
            # when: the worker is killed while checks flow
            wait_until(lambda: count(lambda r: not r.get("client_side")) >= 10,
                       message="ten decisions before the kill")
            first_worker.kill()
            killed_at = len(outcomes)
            wait_until(lambda: count(lambda r: r.get("client_side")) >= 3, timeout=30,
                       message="calls failing closed after the kill")
            streaming.clear()
            # then: every caller returns
            for future in streams:
                future.result(timeout=TIMEOUT + HANG_MARGIN + 5)

        for order, result, took in outcomes:
            assert took < TIMEOUT + HANG_MARGIN, (order, result, took)
            assert result["order_id"] == order["order_id"]
            if result.get("client_side"):
                assert (result["approved"], result["rejection_reason"]) == (False, "risk_timeout")
            else:
                assert result["rejection_reason"] in ENGINE_REASONS, result
        assert all(r.get("client_side") for _, r, _ in outcomes[killed_at + 3:])

        # given: trading halted while no worker runs, so a check decided from now on
        # can be told apart from one decided before the kill
        world.platform_state(TradingState.HALTED)
        # when: a new worker starts
        private_broker.start_worker(queues="pretrade", env=PRETRADE_WORKER_ENV)
        wait_until(lambda: private_broker.queue_length("pretrade") == 0,
                   message="the messages left by the first worker taken")
        sentinel = client.check_order(world.order(), timeout=20)
        # then: checks are answered again
        assert sentinel["rejection_reason"] == "emergency_stop_active", sentinel

        # when: every caller retries its order id
        stored = {order["order_id"]: world.rt.redis.get(keys.idempotency("A", order["order_id"]))
                  for order, _, _ in outcomes}
        retries = [(order, result, client.check_order(order, timeout=20))
                   for order, result, _ in outcomes]

    # then: a decided order gets its stored decision back, even though trading is now
    # halted; an order never decided (lost with the worker, or expired in the queue
    # before the new worker took it) is decided now
    replayed = fresh = 0
    for order, first, retry in retries:
        kept = stored[order["order_id"]]
        if not first.get("client_side"):
            assert kept is not None and orjson.loads(kept) == first
        if kept is not None:
            assert retry == orjson.loads(kept)
            assert retry["rejection_reason"] in ENGINE_REASONS, retry
            replayed += 1
        else:
            assert retry["rejection_reason"] == "emergency_stop_active", retry
            fresh += 1
    assert replayed >= 10 and fresh >= 1
