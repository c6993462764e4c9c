"""Liquidations that a solo ``actions`` worker runs as batches (``risk_tasks.batches``):
each episode still closes everything once, its alert is sent once it is saved, and a
worker killed in the middle of a batch loses and doubles nothing (alerts included)."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest

from models import tables as t
from risk_tasks import actions
from tests.integration.action_world import FAST_RETRIES, ActionWorld, http_env
from tests.integration.helpers import wait_until
from tests.integration.test_liquidation import arrange_underwater, stub, world  # noqa: F401
from tests.support.broker import BrokerQueues

pytestmark = pytest.mark.integration

UNDERWATER_BALANCE = Decimal(1000 - 5000 - 200 - 100)  # after BTC, ETH and SOL close


def batch_worker(broker, size: int, env: dict | None = None, wait_ms: int = 20):  # noqa: ANN001, ANN201
    """An actions-role worker (solo) that takes ``size`` messages at a time (waiting
    ``wait_ms`` for more after the first); it does not consume ``alerts``, so the alerts
    it sends wait there to be read."""
    return broker.start_worker(queues="liquidation,unwind",
                               env={**FAST_RETRIES, "RISK_ACTION_BATCH_SIZE": str(size),
                                    "RISK_ACTION_BATCH_WAIT_MS": str(wait_ms), **(env or {})},
                               extra_args=[f"--prefetch-multiplier={size}"])


def batch_sizes(worker) -> list[int]:  # noqa: ANN001
    return [int(n) for n in re.findall(r"running a batch of (\d+) ", worker.logs())]


@pytest.fixture()
def queues(private_broker):  # noqa: ANN001, ANN201
    q = BrokerQueues(private_broker.broker_url)
    yield q
    q.close()


def underwater(world: ActionWorld, prefix: str, n: int, stub=None) -> list[str]:  # noqa: ANN001
    """``n`` accounts under water (three positions each, all to close); the venue stub,
    if any, quotes the shocked marks."""
    accounts = [f"{prefix}{i:02d}" for i in range(n)]
    for account in accounts:
        arrange_underwater(world, account)
    if stub is not None:
        stub.set_prices({"BTC": 45000, "ETH": 3100, "SOL": 90})
    return accounts


def alert_ids(queues: BrokerQueues) -> list[str]:
    return [m.args[0]["alert_id"] for m in queues.messages("alerts", "risk.send_alert")]


def test_a_batch_liquidates_each_account_once_and_alerts_for_each(world, private_broker,  # noqa: F811
                                                                   queues):
    # given twelve accounts under water, their episodes queued before any worker runs,
    # two of them enqueued twice
    accounts = underwater(world, "B", 12)
    for account in accounts:
        world.liquidate(account, f"ep-{account}")
    world.liquidate(accounts[3], f"ep-{accounts[3]}")
    world.liquidate(accounts[7], f"ep-{accounts[7]}")
    # when one worker takes them eight at a time
    worker = batch_worker(private_broker, 8)
    for account in accounts:
        assert world.wait_liquidated(f"ep-{account}")["status"] == "completed"
    wait_until(lambda: private_broker.queue_length("liquidation") == 0, message="queue empty")
    # then they ran in batches, the first a full one: one fetch took what the prefetch
    # allowed (kombu_patches, many messages per fetch), not one message
    assert max(wait_until(lambda: batch_sizes(worker), message="batches logged")) == 8
    # and each position closed once, at mark, whatever the repeats
    world.drain()
    for account in accounts:
        fills = [f for f in world.fills(account) if f.source == "liquidation"]
        assert sorted(f.symbol for f in fills) == ["BTC", "ETH", "SOL"]
        assert world.positions(account) == {}
        assert world.balance(account) == UNDERWATER_BALANCE
    rows = world.query(t.LiquidationRow)
    assert sorted((r.episode_id, r.status, r.attempts) for r in rows) == [
        (f"ep-{a}", "completed", 1) for a in accounts]
    # and every episode's alert was sent; a repeat sends the same alert id again
    # (delivered once: ``risk.send_alert`` drops a repeated id)
    expected = {actions.liquidation_alert_id(f"ep-{a}") for a in accounts}
    sent = wait_until(lambda: (ids := alert_ids(queues)) and set(ids) == expected and ids,
                      message="one alert per episode")
    assert len(sent) <= len(accounts) + 2
    assert not world.query(t.DeadLetterRow)


def test_worker_killed_in_the_middle_of_a_batch_loses_and_doubles_nothing(
        world, private_broker, queues, stub):  # noqa: F811
    # given six accounts under water, three positions each, a venue that holds each reply
    # 0.4 s, and one worker that takes all six episodes in one batch
    accounts = underwater(world, "K", 6, stub)
    stub.delay = 0.4
    # (a worker busy with a batch answers no ping, so it is started first)
    first = batch_worker(private_broker, 6, http_env(stub), wait_ms=500)
    for account in accounts:
        world.liquidate(account, f"ep-{account}")
    # when it is SIGKILLed after the first episode completed and the second is mid-way
    wait_until(lambda: len(stub.orders(accounts[1])) >= 1, timeout=60,
               message="second episode")
    first.kill()
    done = [a for a in accounts
            if (world.liquidation_progress(f"ep-{a}") or {}).get("status") == "completed"]
    assert done and len(done) < len(accounts)
    assert not alert_ids(queues)  # the batch never reached its alerts
    # and another worker takes the redelivered messages (after the visibility timeout)
    stub.delay = 0.0
    batch_worker(private_broker, 6, http_env(stub))
    for account in accounts:
        assert world.wait_liquidated(f"ep-{account}", timeout=90)["status"] == "completed"
    # then every position was closed once, at the venue and in the state store
    assert_closed_once(world, accounts, stub)
    rows = {r.episode_id: r for r in world.query(t.LiquidationRow)}
    assert {e for e, r in rows.items() if r.status == "completed"} == {
        f"ep-{a}" for a in accounts}
    # and the episodes completed before the kill alerted too, on their redelivery
    expected = {actions.liquidation_alert_id(f"ep-{a}") for a in accounts}
    wait_until(lambda: set(alert_ids(queues)) == expected, message="every alert sent")
    assert 6 in batch_sizes(first)


def test_a_venue_failing_inside_a_batch_retries_those_calls_and_completes_each_once(
        world, private_broker, queues, stub):  # noqa: F811
    # given four accounts under water and a venue whose next two calls fail (503)
    accounts = underwater(world, "R", 4, stub)
    stub.fail_next(2, 503)
    worker = batch_worker(private_broker, 4, http_env(stub), wait_ms=500)
    # when their episodes arrive together
    for account in accounts:
        world.liquidate(account, f"ep-{account}")
    # then each completes, the failed calls on a retry (a new message, same task id)
    progress = {a: world.wait_liquidated(f"ep-{a}", timeout=60) for a in accounts}
    assert {p["status"] for p in progress.values()} == {"completed"}
    assert sum(p["attempts"] for p in progress.values()) == len(accounts) + 2
    assert 4 in batch_sizes(worker)
    assert_closed_once(world, accounts, stub)
    expected = {actions.liquidation_alert_id(f"ep-{a}") for a in accounts}
    wait_until(lambda: set(alert_ids(queues)) == expected, message="every alert sent")


def assert_closed_once(world: ActionWorld, accounts: list[str], stub) -> None:  # noqa: ANN001
    """Every position of ``accounts`` closed once: at the venue, in the state store, and
    nothing dead-lettered."""
    world.drain()
    for account in accounts:
        assert sorted(o["symbol"] for o in stub.orders(account)) == ["BTC", "ETH", "SOL"]
        assert world.positions(account) == {}
        assert world.balance(account) == UNDERWATER_BALANCE
    assert not world.query(t.DeadLetterRow)
