"""``risk.unwind_account`` after an emergency stop, on real workers: orders canceled,
positions closed in slices, progress recorded on the stop; a global stop fanned out per
shard over the ``unwind`` queue; and liquidation racing unwind on the same account never
closes a position twice."""

from __future__ import annotations

from decimal import Decimal

import pytest

from models import tables as t
from risk_tasks import actions
from tests.integration.action_world import ACTION_QUEUES, FAST_RETRIES, ActionWorld, http_env
from tests.integration.helpers import wait_until
from tests.integration.monitor_world import ids_in_shard
from tests.support.gateway_stub import GatewayStub

pytestmark = pytest.mark.integration

QUEUES = "control," + ACTION_QUEUES
TIMEOUT = 30.0


@pytest.fixture()
def world(rt, private_broker) -> ActionWorld:  # noqa: ANN001
    w = ActionWorld(rt, private_broker)
    for symbol in ("BTC", "ETH"):
        w.symbol(symbol)
    w.prices({"BTC": 50000, "ETH": 3000})
    return w


@pytest.fixture()
def stub():  # noqa: ANN201
    server = GatewayStub({"BTC": 50000, "ETH": 3000}).start()
    yield server
    server.stop()


def stop(world: ActionWorld, **kwargs) -> dict:  # noqa: ANN003
    return world.control("trigger_emergency_stop", reason="test stop", triggered_by="ops",
                         **kwargs)


def stop_row(world: ActionWorld, stop_id: str) -> t.EmergencyStopRow:
    rows = world.query(t.EmergencyStopRow, t.EmergencyStopRow.stop_id == stop_id)
    assert len(rows) == 1
    return rows[0]


def test_account_stop_cancels_orders_closes_in_slices_and_records_progress(
        world, private_broker, stub):
    # given an account with two positions and three open orders at the venue, and
    # unwinding in halves with a pause between rounds
    world.account("E1", 100_000)
    world.fill("E1", "BTC", "BUY", 2, 50000)
    world.fill("E1", "ETH", "SELL", 4, 3000)
    stub.open_orders["E1"] = 3
    private_broker.start_worker(queues=QUEUES, env=http_env(
        stub, RISK_UNWIND_SLICE_FRACTION="0.5", RISK_UNWIND_PAUSE_SECONDS="0.2"))
    # when the account is stopped
    result = stop(world, scope="account", account_id="E1")
    assert result["success"] and result["unwinds_enqueued"] == 1
    progress = world.wait_unwound(result["stop_id"], "E1", timeout=TIMEOUT)
    # then two rounds of half slices closed both positions, largest notional first
    assert [(s["symbol"], s["quantity"]) for s in progress["steps"]] == [
        ("BTC", "1.0"), ("ETH", "2.0"), ("BTC", "1.0"), ("ETH", "2.0")]
    assert world.positions("E1") == {}
    assert progress["orders_canceled"] == 3
    # and the stop records the progress and its completion
    world.drain()
    row = stop_row(world, result["stop_id"])
    assert (row.accounts_to_unwind, row.orders_canceled, row.positions_closed, row.completed) \
        == (1, 3, 2, True)
    fills = [f for f in world.fills("E1") if f.source == "unwind"]
    assert len(fills) == 4 and {f.reference for f in fills} == {result["stop_id"]}


def test_global_stop_fans_out_per_shard_and_unwinds_every_exposed_account(world, private_broker):
    # given exposed accounts in every shard, and some accounts without positions
    exposed = [a for shard in range(4) for a in ids_in_shard("X", shard, 2)]
    idle = [a for shard in range(4) for a in ids_in_shard("I", shard, 1)]
    for account_id in exposed + idle:
        world.account(account_id, 100_000)
    for account_id in exposed:
        world.fill(account_id, "BTC", "BUY", 1, 50000)
        world.fill(account_id, "ETH", "BUY", 1, 3000)
    private_broker.start_worker(queues=QUEUES, pool="prefork", concurrency=2)
    # when the platform is stopped
    result = stop(world)
    assert result["success"] and result["unwinds_enqueued"] == 4  # one listing per shard
    done = actions.stop_keys(result["stop_id"])[2]
    wait_until(lambda: world.rt.redis.exists(done), timeout=TIMEOUT, message="stop completed")
    # then every exposed account is flat, and no idle one was touched
    for account_id in exposed:
        assert world.positions(account_id) == {}
    world.drain()
    row = stop_row(world, result["stop_id"])
    assert (row.accounts_to_unwind, row.positions_closed, row.completed) == (8, 16, True)
    fills = world.query(t.FillRow, t.FillRow.source == "unwind")
    assert sorted((f.account_id, f.symbol) for f in fills) == sorted(
        (a, s) for a in exposed for s in ("BTC", "ETH"))  # one close per position
    assert not world.query(t.DeadLetterRow)


def test_global_stop_with_nothing_to_unwind_completes_at_once(world, private_broker):
    world.account("Q1", 1000)
    private_broker.start_worker(queues=QUEUES)
    result = stop(world)
    done = actions.stop_keys(result["stop_id"])[2]
    wait_until(lambda: world.rt.redis.exists(done), timeout=TIMEOUT, message="stop completed")
    world.drain()
    row = stop_row(world, result["stop_id"])
    assert (row.accounts_to_unwind, row.positions_closed, row.completed) == (0, 0, True)


def test_liquidation_and_unwind_racing_on_one_account_close_each_position_once(
        world, private_broker, stub):
    # given accounts under water, a venue that answers slowly, and two worker processes
    world.prices({"BTC": 50000, "ETH": 3000})
    accounts = ["RACE1", "RACE2", "RACE3"]
    for account_id in accounts:
        world.account(account_id, 1000)
        world.fill(account_id, "BTC", "BUY", 1, 50000)
        world.fill(account_id, "ETH", "BUY", 2, 3000)
    world.prices({"BTC": 45000, "ETH": 2800})
    stub.set_prices({"BTC": 45000, "ETH": 2800})
    stub.delay = 0.3
    private_broker.start_worker(queues=ACTION_QUEUES, pool="prefork", concurrency=2,
                                env=http_env(stub))
    # when each is liquidated and unwound at the same time
    for account_id in accounts:
        world.liquidate(account_id, f"ep-{account_id}")
        world.unwind(account_id, "stop-race")
    for account_id in accounts:
        world.wait_liquidated(f"ep-{account_id}", timeout=60)
        world.wait_unwound("stop-race", account_id, timeout=60)
    # then the venue executed one close per position, and the books agree
    for account_id in accounts:
        orders = stub.orders(account_id)
        assert sorted(o["symbol"] for o in orders) == ["BTC", "ETH"], orders
        assert world.positions(account_id) == {}
        assert world.balance(account_id) == Decimal(1000 - 5000 - 400)
    world.drain()
    fills = world.query(t.FillRow, t.FillRow.source.in_(["liquidation", "unwind"]))
    assert len(fills) == 2 * len(accounts)
    assert not world.query(t.DeadLetterRow)


def test_unknown_stop_account_is_bad_input_and_dead_lettered(world, private_broker):
    private_broker.start_worker(queues=ACTION_QUEUES, env=FAST_RETRIES)
    world.unwind("ghost", "stop-1")
    world.unwind("E1", "")
    wait_until(lambda: (world.drain(), len(world.query(t.DeadLetterRow)) == 2)[1],
               timeout=TIMEOUT, message="two dead letters")
    rows = world.query(t.DeadLetterRow)
    assert {(r.task_name, r.attempts) for r in rows} == {("risk.unwind_account", 1)}
    assert {r.idempotency_key for r in rows} == {"stop-1:ghost", ":E1"}
    assert {r.args[0] for r in rows} == {"ghost", "E1"}
