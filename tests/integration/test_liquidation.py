"""``risk.liquidate_account`` on real workers: the pinned rule, the records, and an episode
that closes nothing twice (duplicate enqueue, second delivery, a worker SIGKILLed
mid-way with the venue's reply in flight, a venue failing for a while)."""

from __future__ import annotations

import time
from decimal import Decimal

import pytest

from models import tables as t
from risk_tasks import actions
from tests.integration.action_world import ACTION_QUEUES, FAST_RETRIES, ActionWorld, http_env
from tests.integration.helpers import wait_until
from tests.support.gateway_stub import GatewayStub

pytestmark = pytest.mark.integration


@pytest.fixture()
def world(rt, private_broker) -> ActionWorld:  # noqa: ANN001
    w = ActionWorld(rt, private_broker)
    for symbol in ("BTC", "ETH", "SOL"):
        w.symbol(symbol, imr="0.10", mmr="0.05")
    return w


@pytest.fixture()
def stub():  # noqa: ANN201
    server = GatewayStub().start()
    yield server
    server.stop()


def arrange_partial(world: ActionWorld, account_id: str = "L1") -> None:
    """Equity 4,000 < maintenance 4,200 at the shocked marks; closing BTC (the largest
    notional) leaves 3,900 of initial margin, which the equity covers."""
    world.prices({"BTC": 50000, "ETH": 3000, "SOL": 100})
    world.account(account_id, 10000)
    world.fill(account_id, "BTC", "BUY", 1, 50000)
    world.fill(account_id, "ETH", "BUY", 10, 3000)
    world.fill(account_id, "SOL", "BUY", 100, 100)
    world.prices({"BTC": 45000, "ETH": 2900, "SOL": 100})


def arrange_underwater(world: ActionWorld, account_id: str, prices: dict | None = None) -> None:
    """Equity below zero at the shocked marks: everything is closed."""
    world.prices(prices or {"BTC": 50000, "ETH": 3000, "SOL": 100})
    world.account(account_id, 1000)
    world.fill(account_id, "BTC", "BUY", 1, 50000)
    world.fill(account_id, "ETH", "SELL", 2, 3000)
    world.fill(account_id, "SOL", "BUY", 10, 100)
    shocked = {"BTC": 45000, "ETH": 3100, "SOL": 90}
    world.prices(shocked)


def test_closes_largest_notional_first_until_equity_covers_initial_margin(world, private_broker):
    # given an account just below maintenance, and a liquidation worker (paper gateway)
    arrange_partial(world)
    private_broker.start_worker(queues=ACTION_QUEUES)
    # when it is liquidated
    world.liquidate("L1", "ep-1")
    progress = world.wait_liquidated("ep-1")
    # then only BTC was closed, at mark, and the equity is unchanged by the fills
    assert progress["status"] == "completed"
    assert [s["symbol"] for s in progress["steps"]] == ["BTC"]
    assert world.positions("L1") == {"ETH": Decimal(10), "SOL": Decimal(100)}
    assert world.balance("L1") == Decimal(10000) - Decimal(5000)
    world.drain()
    row = world.query(t.LiquidationRow)[0]
    assert (row.episode_id, row.account_id, row.status) == ("ep-1", "L1", "completed")
    assert row.equity_before == row.equity_after == Decimal(4000)
    assert row.maintenance_before == Decimal(4200)
    assert row.realized_pnl == Decimal(-5000)
    assert [p["symbol"] for p in row.positions_closed] == ["BTC"]
    steps = world.query(t.LiquidationStepRow)
    assert [(s.step, s.action, s.symbol) for s in steps] == [
        (0, "cancel_orders", None), (1, "close_position", "BTC")]
    assert steps[1].price == Decimal(45000) and steps[1].quantity == Decimal(1)
    fills = [f for f in world.fills("L1") if f.source == "liquidation"]
    assert [(f.symbol, f.side, f.reference) for f in fills] == [("BTC", "SELL", "ep-1")]
    # and a critical liquidation alert was delivered and stored
    wait_until(lambda: (world.drain(), world.query(t.AlertRow, t.AlertRow.kind == "liquidation"))[1],
               message="liquidation alert stored")


def test_closes_everything_when_equity_is_not_positive(world, private_broker):
    arrange_underwater(world, "U1")
    private_broker.start_worker(queues=ACTION_QUEUES)
    world.liquidate("U1", "ep-u1")
    progress = world.wait_liquidated("ep-u1")
    # largest notional first: BTC 45,000, then ETH 6,200, then SOL 900
    assert [s["symbol"] for s in progress["steps"]] == ["BTC", "ETH", "SOL"]
    assert [s["side"] for s in progress["steps"]] == ["SELL", "BUY", "SELL"]
    assert world.positions("U1") == {}
    assert Decimal(progress["equity_after"]) == Decimal(1000 - 5000 - 200 - 100)


def test_an_account_no_longer_liquidatable_is_skipped_and_nothing_closes(world, private_broker):
    arrange_partial(world, "R1")
    world.prices({"BTC": 50000, "ETH": 3000, "SOL": 100})  # recovered before the task ran
    private_broker.start_worker(queues=ACTION_QUEUES)
    world.liquidate("R1", "ep-r1")
    assert world.wait_liquidated("ep-r1")["status"] == "skipped"
    assert len(world.positions("R1")) == 3
    world.drain()
    assert [r.status for r in world.query(t.LiquidationRow)] == ["skipped"]


def test_duplicate_enqueues_and_a_late_repeat_close_nothing_twice(world, private_broker):
    # given two accounts under water and two worker processes taking the same episodes
    arrange_underwater(world, "D1")
    arrange_underwater(world, "D2")
    private_broker.start_worker(queues=ACTION_QUEUES, pool="prefork", concurrency=2,
                                env=FAST_RETRIES)
    # when each episode is enqueued three times at once
    for _ in range(3):
        world.liquidate("D1", "ep-d1")
        world.liquidate("D2", "ep-d2")
    world.wait_liquidated("ep-d1")
    world.wait_liquidated("ep-d2")
    # and once more after it finished
    late = world.liquidate("D1", "ep-d1")
    wait_until(lambda: private_broker.queue_length("liquidation") == 0, message="queue empty")
    time.sleep(1.0)
    # then each position was closed exactly once
    world.drain()
    for account in ("D1", "D2"):
        fills = [f for f in world.fills(account) if f.source == "liquidation"]
        assert sorted(f.symbol for f in fills) == ["BTC", "ETH", "SOL"]
        assert world.positions(account) == {}
        assert world.balance(account) == Decimal(1000 - 5000 - 200 - 100)
    rows = world.query(t.LiquidationRow)
    assert [(r.episode_id, r.status) for r in rows] == [("ep-d1", "completed"),
                                                        ("ep-d2", "completed")]
    assert len(world.query(t.LiquidationStepRow)) == 8  # (cancel + 3 closes) x 2
    assert late.id  # sent; its run found the episode finished and returned it
    assert not world.query(t.DeadLetterRow)


def test_gateway_failing_three_times_then_succeeding_completes_once(world, private_broker, stub):
    arrange_underwater(world, "G1")
    stub.set_prices({"BTC": 45000, "ETH": 3100, "SOL": 90})
    stub.open_orders["G1"] = 2
    stub.fail_next(3, 503)
    private_broker.start_worker(queues=ACTION_QUEUES, env=http_env(stub))
    world.liquidate("G1", "ep-g1")
    progress = world.wait_liquidated("ep-g1")
    assert progress["status"] == "completed"
    assert progress["attempts"] == 4  # three failed runs, then the one that finished
    assert progress["orders_canceled"] == 2
    assert len(stub.orders("G1")) == 3
    assert world.positions("G1") == {}
    world.drain()
    row = world.query(t.LiquidationRow)[0]
    assert (row.status, row.attempts, row.orders_canceled) == ("completed", 4, 2)
    assert not world.query(t.DeadLetterRow)


def test_worker_killed_mid_liquidation_then_the_episode_completes_exactly_once(
        world, private_broker, stub):
    # given an account whose three positions all close, a venue that holds each reply
    # 2 s after executing the order, and one worker (acks_late) taking the episode
    arrange_underwater(world, "K1")
    stub.set_prices({"BTC": 45000, "ETH": 3100, "SOL": 90})
    stub.delay = 2.0
    first = private_broker.start_worker(queues=ACTION_QUEUES, env=http_env(stub))
    world.liquidate("K1", "ep-k1")
    # when the worker is SIGKILLed while the second order is executed but unanswered
    wait_until(lambda: len(stub.orders("K1")) >= 2, timeout=30, message="second order sent")
    first.kill()
    progress = world.liquidation_progress("ep-k1")
    assert progress["status"] == "running" and progress["pending"] is not None
    # and another worker takes the redelivered message (after the visibility timeout)
    stub.delay = 0.0
    private_broker.start_worker(queues=ACTION_QUEUES, env=http_env(stub))
    progress = world.wait_liquidated("ep-k1", timeout=90)
    # then every position was closed once: three orders at the venue, three fills
    assert progress["status"] == "completed" and progress["attempts"] == 2
    assert sorted(o["symbol"] for o in stub.orders("K1")) == ["BTC", "ETH", "SOL"]
    assert world.positions("K1") == {}
    assert world.balance("K1") == Decimal(1000 - 5000 - 200 - 100)
    world.drain()
    fills = [f for f in world.fills("K1") if f.source == "liquidation"]
    assert sorted(f.symbol for f in fills) == ["BTC", "ETH", "SOL"]
    assert [s.step for s in world.query(t.LiquidationStepRow)] == [0, 1, 2, 3]
    assert [(r.status, r.attempts) for r in world.query(t.LiquidationRow)] == [("completed", 2)]


def test_bad_input_is_dead_lettered_once_without_retries(world, private_broker):
    private_broker.start_worker(queues=ACTION_QUEUES)
    world.liquidate("nobody", "ep-x")
    world.liquidate({"not": "an id"}, "ep-y")
    wait_until(lambda: (world.drain(), len(world.query(t.DeadLetterRow)) == 2)[1],
               message="two dead letters")
    rows = world.query(t.DeadLetterRow)
    assert {r.attempts for r in rows} == {1}
    assert {r.task_name for r in rows} == {"risk.liquidate_account"}
    assert any("unknown account" in r.error for r in rows)
    assert world.liquidation_progress("ep-x") is None
    assert actions.liquidation_key("ep-x")  # nothing was started for it
