"""Pretrade workers killed with SIGKILL while several client processes call
``check_order``: no caller ever hangs past its timeout, no caller gets another order's
answer, the surviving worker keeps deciding, and a worker started after the last one
died takes over.

(tests/integration/test_worker_restart.py covers one worker, one client process and the
retry of a lost order id; this adds client processes, a second worker, and recovery.)
"""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import pytest

from tests.integration.helpers import World, wait_until, worker_id
from tests.reliability.load import Call, client_loop

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TIMEOUT = 1.0  # each caller's timeout, s
HANG_MARGIN = 2.0  # past the timeout, a call counts as hung
PROCESSES, THREADS = 2, 3
ACCOUNTS = [f"K{i}" for i in range(10)]
ENV = {"RISK_BROKER_ACK_EMULATION": "0"}
ENGINE_REASONS = {None, "rate_limited"}  # what these orders can be decided as


def decided_by(world: World, order_ids: set[str]) -> dict[str, str]:
    """order id -> the worker process that decided it (from the audit stream)."""
    return {rec["r"]["order_id"]: rec["w"] for rec in world.audit_records()
            if rec["r"].get("order_id") in order_ids}


def test_pretrade_workers_killed_under_load_from_several_processes(world, private_broker,
                                                                    tmp_path: Path):
    # given: ten rich accounts, two pretrade workers, and two client processes of three
    # callers each
    world.default_policies()
    world.symbol("BTC")
    world.prices({"BTC": 100})
    for account_id in ACCOUNTS:
        world.account(account_id, 1_000_000_000)
    first = private_broker.start_worker(queues="pretrade", env=ENV, name=f"kill-a-{uuid.uuid4().hex[:6]}")
    second = private_broker.start_worker(queues="pretrade", env=ENV, name=f"kill-b-{uuid.uuid4().hex[:6]}")
    stop = tmp_path / "stop"
    progress = private_broker.app.backend.client  # the result backend: count answers there

    def answered() -> int:
        return int(progress.dbsize())

    with ProcessPoolExecutor(PROCESSES, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(client_loop, private_broker.broker_url, private_broker.backend_url,
                               f"p{n}", ACCOUNTS, TIMEOUT, THREADS, str(stop))
                   for n in range(PROCESSES)]
        wait_until(lambda: answered() >= 40, timeout=60, message="forty answers before the kill")
        # when: one worker is killed; the other keeps going
        first.kill()
        killed_first = time.time()
        time.sleep(3)
        # and then the other one too: nobody consumes the queue
        second.kill()
        killed_both = time.time()
        time.sleep(4)
        # and a new worker starts
        launched = time.time()
        third = private_broker.start_worker(queues="pretrade", env=ENV)
        started_third = time.time()
        time.sleep(3)
        stop.touch()
        calls = [Call(*row) for future in futures for row in future.result(timeout=60)]

    # then: every caller had an answer within its timeout, and its own answer
    assert len(calls) > 60
    for call in calls:
        assert call.took < TIMEOUT + HANG_MARGIN, call
        assert call.answered_id == call.order_id, call
        if call.client_side:
            assert (call.approved, call.reason) == (False, "risk_timeout"), call
        else:
            assert call.reason in ENGINE_REASONS, call
    # and the second worker decided orders after the first died
    ids = {c.order_id for c in calls}
    workers = decided_by(world, ids)
    between = {c.order_id for c in calls if c.decided and killed_first + 0.5 < c.at < killed_both}
    assert between, "no decision between the two kills"
    assert {workers[o] for o in between} == {worker_id(second)}
    # and with no worker, callers failed closed
    gap = [c for c in calls if killed_both + TIMEOUT < c.at < launched - TIMEOUT]
    assert gap and all(c.client_side for c in gap), gap[:5]
    # and the new worker took over: it decided calls made after it started
    after = [c for c in calls if c.at > started_third + 0.5]
    assert after and sum(c.decided for c in after) >= len(after) * 0.8
    assert {workers[c.order_id] for c in after if c.decided} == {worker_id(third)}
    print(f"\npretrade kill: {len(calls)} calls, {sum(c.decided for c in calls)} decided, "
          f"{sum(c.client_side for c in calls)} failed closed, "
          f"slowest {max(c.took for c in calls) * 1000:.0f} ms (timeout {TIMEOUT * 1000:.0f} ms)")
