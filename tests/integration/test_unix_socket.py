"""Redis over its Unix socket (a deployment where Redis runs on the workers' host): the
broker, the result backend and the hot state each in their own URL form, a worker that
decides a check through them, and ``riskctl status`` reading the socket broker's queues."""

from __future__ import annotations

import pytest

from risk_tasks.status import queue_depths
from tests.support.workers import PrivateBroker

pytestmark = pytest.mark.integration


def test_a_worker_over_the_unix_socket_decides_and_its_queues_are_read(world, redis_server):
    if redis_server is None:
        pytest.skip("the session's Redis is not this suite's own (RISK_TEST_REDIS_BASE)")
    # given: a broker and backend on the session Redis's socket (spare databases), and a
    # worker whose every Redis client, hot state included, goes through the socket
    socket = redis_server.socket
    broker = PrivateBroker(broker_url=f"redis+socket://{socket}?virtual_host=3",
                           backend_url=f"redis+socket://{socket}?virtual_host=4")
    try:
        world.symbol("BTC")
        world.prices({"BTC": 100})
        world.account("A", 1_000_000)
        broker.start_worker(queues="pretrade,control", pool="solo",
                            env={"RISK_REDIS_URL": f"unix://{socket}?db=2"})
        # when
        decided = broker.app.send_task("risk.check_order", [world.order(account_id="A")])
        refused = broker.app.send_task("risk.check_order",
                                       [world.order(account_id="A", quantity=10 ** 9)])
        broker.app.send_task("risk.send_alert", [{"severity": "warning"}])  # not consumed
        # then: decisions from the state the test wrote over TCP, results stored by the
        # worker's backend (the engine's own, in its socket form) and read here
        assert decided.get(timeout=20)["approved"] is True
        assert refused.get(timeout=20)["rejection_reason"] == "insufficient_margin"
        depths = queue_depths(broker.broker_url)
        assert depths["alerts"] == 1 and depths["pretrade"] == 0
    finally:
        broker.close()
