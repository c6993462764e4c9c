"""The liquidation's steps in process, on the session's Redis, with the paper gateway:
the one-script close (execution, fill and step together) when the mark or the account
moves under it, an execution left by an earlier run, a run that lost its lease, and
how many round trips one liquidation takes."""

from __future__ import annotations

from decimal import Decimal

import orjson
import pytest

from risk_tasks import actions, episodes
from risk_tasks.gateways import paper
from risk_tasks.gateways.paper import PaperGateway, execution_key
from risk_tasks.leases import LeaseLost
from tests.integration.helpers import World

pytestmark = pytest.mark.integration


class MovingGateway(PaperGateway):
    """A paper gateway that runs ``before`` once, just before its first close."""

    def __init__(self, store, before) -> None:  # noqa: ANN001
        super().__init__(store)
        self.before = before
        self.calls = 0

    def close_and_record(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN201
        self.calls += 1
        if self.before is not None:
            before, self.before = self.before, None
            before()
        return super().close_and_record(*args, **kwargs)


def long_btc_and_eth(rt, app, balance: int, btc: int, btc_mark: int) -> World:  # noqa: ANN001
    """S1 with ``balance``, long ``btc`` BTC at 50,000 and 2 ETH at 3,000; then BTC marked
    at ``btc_mark`` (ETH stays at 3,000). Margin rates 10 % and 5 %."""
    w = World(rt, app)
    for symbol in ("BTC", "ETH"):
        w.symbol(symbol, imr="0.10", mmr="0.05")
    w.prices({"BTC": 50000, "ETH": 3000})
    w.account("S1", balance)
    w.fill("S1", "BTC", "BUY", btc, 50000)
    w.fill("S1", "ETH", "BUY", 2, 3000)
    w.prices({"BTC": btc_mark, "ETH": 3000})
    return w


@pytest.fixture()
def world(rt, app) -> World:  # noqa: ANN001
    """Equity 1000 - 5000 < 0: everything closes."""
    return long_btc_and_eth(rt, app, balance=1000, btc=1, btc_mark=45000)


@pytest.fixture(params=[False, True], ids=["alone", "in-batch"])
def batched(request) -> bool:  # noqa: ANN001
    """Both ways a liquidation runs: alone (the alert is sent before the completion is
    saved, by its own save) and in a batch (``alert_again``: the alert is sent after,
    and the last close writes the completion in its own step)."""
    return request.param


def liquidate(rt, gateway, episode: str = "ep-s1", batched: bool = False  # noqa: ANN001
              ) -> tuple[dict, list]:
    alerts: list = []
    episodes.begin(rt.redis, "S1", episode)
    result = actions.Liquidation(rt, gateway, "S1", "test", episode, alerts.append,
                                 alert_again=batched).run()
    return result, alerts


def progress(rt, episode: str = "ep-s1") -> dict:  # noqa: ANN001
    return orjson.loads(rt.redis.get(actions.liquidation_key(episode)))


def test_a_mark_moving_under_the_close_is_read_again_and_filled_at_the_new_mark(
        world, rt, batched):
    gateway = MovingGateway(rt.store, lambda: world.prices({"BTC": 44000}))
    result, alerts = liquidate(rt, gateway, batched=batched)
    assert result["status"] == "completed" and result["positions_closed"] == ["BTC", "ETH"]
    steps = progress(rt)["steps"]
    assert [(s["symbol"], s["price"]) for s in steps] == [("BTC", "44000"), ("ETH", "3000")]
    assert gateway.calls == 3  # refused once (mark moved), then BTC, then ETH
    account, _ = rt.store.read_account("S1")
    assert account.positions == {}
    assert account.balance == Decimal(1000 - 6000)  # each fill applied once
    assert len(alerts) == 1
    assert not rt.redis.exists(episodes.key("S1"))


def test_an_account_changed_under_the_close_is_planned_again(world, rt, batched):
    # another fill closes half the ETH between the read and the close
    gateway = MovingGateway(rt.store, lambda: world.fill("S1", "ETH", "SELL", 1, 3000))
    result, _ = liquidate(rt, gateway, batched=batched)
    assert result["status"] == "completed"
    steps = progress(rt)["steps"]
    assert [(s["symbol"], s["quantity"]) for s in steps] == [("BTC", "1"), ("ETH", "1")]
    account, _ = rt.store.read_account("S1")
    assert account.positions == {}
    assert account.balance == Decimal(1000 - 5000)


def test_an_execution_left_by_an_earlier_run_is_applied_once_at_its_price(
        world, rt, batched):
    # an earlier run executed BTC (step 1) at 46,000 and stopped before applying it
    rid = actions.request_id("ep-s1", "BTC", "1")
    rt.redis.set(execution_key(rid), orjson.dumps(
        {"request_id": rid, "account_id": "S1", "symbol": "BTC", "side": "SELL",
         "quantity": "1", "price": "46000"}))
    result, _ = liquidate(rt, PaperGateway(rt.store), batched=batched)
    assert result["status"] == "completed"
    steps = progress(rt)["steps"]
    assert [(s["symbol"], s["price"]) for s in steps] == [("BTC", "46000"), ("ETH", "3000")]
    account, _ = rt.store.read_account("S1")
    assert account.positions == {} and account.balance == Decimal(1000 - 4000)


def test_a_run_that_lost_its_lease_writes_nothing(world, rt):
    first = actions.Liquidation(rt, PaperGateway(rt.store), "S1", "test", "ep-s1", print)
    data, snap = first.take()
    assert data is None and snap is not None
    # its lease expired and another run took the account
    rt.redis.set(first.lease.key, "someone-else")
    with pytest.raises(LeaseLost):
        first.progress.save({"status": "running", "steps": []})
    assert rt.redis.get(actions.liquidation_key("ep-s1")) is None
    assert rt.redis.get(first.lease.key) == b"someone-else"
    # and its close is refused as a whole: no execution, no fill
    rid = actions.request_id("ep-s1", "BTC", "1")
    data = {"steps": [], "next_step": 1, "pending": None}
    first.lease.renewed_at = 0.0
    with pytest.raises(LeaseLost):
        first.close(data, snap, "BTC", Decimal(1))
    assert not rt.redis.exists(execution_key(rid))
    assert rt.store.read_account("S1")[0].positions["BTC"].quantity == Decimal(1)
    assert rt.redis.get(actions.liquidation_key("ep-s1")) is None


def test_one_liquidation_takes_a_handful_of_round_trips(world, rt, monkeypatch, batched):
    import redis.connection

    sent = []
    original = redis.connection.AbstractConnection.send_packed_command

    def counted(self, command, check_health=True):  # noqa: ANN001, ANN202
        sent.append(command)
        return original(self, command, check_health)

    gateway = PaperGateway(rt.store)
    rt.store.current_config()
    rt.redis.script_load(actions._SNAPSHOT)  # loaded once per server, not per liquidation
    rt.redis.script_load(paper._CLOSE_AND_RECORD)
    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counted)
    result, alerts = liquidate(rt, gateway, batched=batched)
    monkeypatch.undo()
    assert result["positions_closed"] == ["BTC", "ETH"] and len(alerts) == 1
    # begin (episode guard, this test's), take + read, 2 closes (each returning the
    # account as it left it; the first also records the start and the cancellation and
    # keeps the episode alive), completion with episode end + release; in a batch the
    # second close is the last and writes the completion, ends the episode and releases
    # the lease itself
    assert len(sent) == (4 if batched else 5), len(sent)
    assert not rt.redis.exists(episodes.key("S1"))
    assert not rt.redis.exists(actions.AccountLease(rt.redis, "S1", 1).key)
    done = progress(rt)
    assert done["status"] == "completed" and Decimal(done["equity_after"]) == -4000
    assert Decimal(done["realized_pnl"]) == -5000


def journal(rt) -> list[tuple]:  # noqa: ANN001
    from risk_tasks.state import keys

    out = []
    for _, fields in rt.redis.xrange(keys.JOURNAL_STREAM):
        record = orjson.loads(fields[b"d"])
        if record["t"] == "liquidation":
            out.append(("liquidation", record["status"]))
        elif record["t"] == "liquidation_step":
            out.append(("step", record["step"], record["symbol"] or record["action"]))
    return out


def test_the_start_is_recorded_by_the_first_write_even_when_a_close_is_refused(
        world, rt, batched):
    # given a run whose first close is refused (the mark moves under it), then succeeds
    rt.redis.delete("risk:journal")
    gateway = MovingGateway(rt.store, lambda: world.prices({"BTC": 44000}))
    result, _ = liquidate(rt, gateway, batched=batched)
    assert result["status"] == "completed" and gateway.calls == 3
    # then the journal (what PostgreSQL gets) has the start and the cancellation once,
    # before the steps, in order, and the episode was kept alive on the way
    assert journal(rt) == [("liquidation", "started"), ("step", 0, "cancel_orders"),
                           ("step", 1, "BTC"), ("step", 2, "ETH"),
                           ("liquidation", "completed")]
    assert progress(rt)["orders_canceled"] == 0


def test_a_run_that_dies_before_its_first_close_left_nothing_and_the_next_starts_afresh(
        world, rt):
    # given a run that took the account and started, and died before any close
    rt.redis.delete("risk:journal")
    episodes.begin(rt.redis, "S1", "ep-s1")
    dead = actions.Liquidation(rt, PaperGateway(rt.store), "S1", "test", "ep-s1", print)
    _, snap = dead.take()
    data = dead.begin(snap)
    assert data["status"] == "running"
    rt.redis.delete(dead.lease.key)  # its lease expires
    # then it wrote nothing: no progress, no record, no fill
    assert rt.redis.get(actions.liquidation_key("ep-s1")) is None
    assert journal(rt) == []
    # and the next run of the episode does all of it, once, as a first attempt
    result = actions.Liquidation(rt, PaperGateway(rt.store), "S1", "test", "ep-s1",
                                 print).run()
    assert result["status"] == "completed" and result["attempts"] == 1
    assert journal(rt) == [("liquidation", "started"), ("step", 0, "cancel_orders"),
                           ("step", 1, "BTC"), ("step", 2, "ETH"),
                           ("liquidation", "completed")]


def test_a_close_after_redis_lost_its_scripts_loads_them_and_closes_once(world, rt, batched):
    # given Redis without the scripts (as after a restart)
    rt.redis.script_flush()
    # when a liquidation runs (its first close goes with the keep-alive in a pipeline)
    result, _ = liquidate(rt, PaperGateway(rt.store), batched=batched)
    # then it completes, each position closed once
    assert result["status"] == "completed" and result["positions_closed"] == ["BTC", "ETH"]
    account, _ = rt.store.read_account("S1")
    assert account.positions == {} and account.balance == Decimal(1000 - 5000)


@pytest.fixture()
def one_to_close(rt, app) -> World:  # noqa: ANN001
    """An account whose liquidation closes BTC and keeps ETH: equity 10,000 - 8,000 =
    2,000 under a maintenance of 4,900; after BTC, 2,000 >= 6,000 * 0.10."""
    return long_btc_and_eth(rt, app, balance=10000, btc=2, btc_mark=46000)


@pytest.mark.parametrize("move", ["the other mark", "the config"])
def test_a_last_close_is_refused_when_what_its_plan_read_moved(one_to_close, rt, move):
    # given a batched liquidation whose only close is its last, and, between its read
    # and that close, ETH's mark (not the one closed) or the symbol config moves
    if move == "the other mark":
        moved = lambda: one_to_close.prices({"ETH": 2900})  # noqa: E731
    else:
        moved = lambda: one_to_close.symbol("ETH", imr="0.20", mmr="0.05")  # noqa: E731
    gateway = MovingGateway(rt.store, moved)
    rt.redis.delete("risk:journal")
    result, alerts = liquidate(rt, gateway, batched=True)
    # then the first close wrote nothing and the run read again, and the completion's
    # figures are those of the account as it is now
    assert gateway.calls == 2
    assert result["status"] == "completed" and result["positions_closed"] == ["BTC"]
    equity = Decimal(1800) if move == "the other mark" else Decimal(2000)
    assert Decimal(result["equity_after"]) == equity
    assert progress(rt)["equity_after"] == result["equity_after"]
    account, _ = rt.store.read_account("S1")
    assert set(account.positions) == {"ETH"} and account.balance == Decimal(10000 - 8000)
    assert journal(rt) == [("liquidation", "started"), ("step", 0, "cancel_orders"),
                           ("step", 1, "BTC"), ("liquidation", "completed")]
    assert len(alerts) == 1 and not rt.redis.exists(episodes.key("S1"))


def test_a_batched_liquidation_completes_as_a_lone_one_does(one_to_close, rt):
    # given two accounts alike
    one_to_close.account("S2", 10000)
    one_to_close.fill("S2", "BTC", "BUY", 2, 50000)
    one_to_close.fill("S2", "ETH", "BUY", 2, 3000)
    # when one is liquidated alone and the other in a batch
    runs = {}
    for account, batched in (("S1", False), ("S2", True)):
        episodes.begin(rt.redis, account, f"ep-{account}")
        result = actions.Liquidation(rt, PaperGateway(rt.store), account, "test",
                                     f"ep-{account}", print, alert_again=batched).run()
        runs[account] = (result, progress(rt, f"ep-{account}"))
    # then both end the same, but for their ids and times
    def same(result: dict, data: dict) -> tuple:
        return ({k: v for k, v in result.items() if k not in ("episode_id", "account_id")},
                {k: v for k, v in data.items()
                 if k not in ("episode_id", "account_id", "started_at", "completed_at", "steps")},
                [{k: v for k, v in step.items() if k not in ("at", "request_id")}
                 for step in data["steps"]])
    assert same(*runs["S1"]) == same(*runs["S2"])
    assert runs["S2"][0]["positions_closed"] == ["BTC"]
    assert Decimal(runs["S2"][0]["equity_after"]) == 2000


def test_a_batch_takes_its_episodes_in_one_round_trip_and_each_runs_from_its_read(world, rt):
    # given three episodes of a batch: S1 and S2 liquidatable, S3's lease held elsewhere
    for account in ("S2", "S3"):
        world.account(account, 1000)
        world.fill(account, "BTC", "BUY", 1, 45000)
    world.prices({"BTC": 40000})
    rt.redis.set(actions.AccountLease(rt.redis, "S3", 1).key, "someone-else", px=60_000)
    runs = [actions.Liquidation(rt, PaperGateway(rt.store), account, "test", f"ep-{account}",
                                print, alert_again=True) for account in ("S1", "S2", "S3")]
    for account in ("S1", "S2", "S3"):
        episodes.begin(rt.redis, account, f"ep-{account}")
    # when their leases are taken and their accounts read together
    firsts = actions.take_all(rt.redis, runs)
    # then the free ones hold their leases and have their state; the busy one has neither
    assert [f[0] for f in firsts] == [True, True, False]
    assert set(firsts[0][2].account.positions) == {"BTC", "ETH"} and firsts[2][2] is None
    assert rt.redis.get(runs[1].lease.key) == runs[1].lease.token.encode()
    # and each completes from that read, once; the busy one waits for its lease
    assert runs[0].run(firsts[0])["positions_closed"] == ["BTC", "ETH"]
    assert runs[1].run(firsts[1])["positions_closed"] == ["BTC"]
    runs[2].lease.wait_seconds = 0.05
    with pytest.raises(actions.LeaseBusy):
        runs[2].run(firsts[2])
    assert not rt.redis.exists(runs[0].lease.key) and not rt.redis.exists(runs[1].lease.key)
    assert rt.store.read_account("S2")[0].positions == {}


def test_a_run_takes_again_the_lease_its_own_token_holds(world, rt):
    # given a run whose batch took its lease, but whose read came back as an error
    run = actions.Liquidation(rt, PaperGateway(rt.store), "S1", "test", "ep-s1", print,
                              alert_again=True)
    episodes.begin(rt.redis, "S1", "ep-s1")
    assert actions.take_all(rt.redis, [run])[0][0] is True
    run.lease.wait_seconds = 0.0
    # when it takes by itself: its own token's lease is renewed, not busy
    result = run.run(None)
    assert result["status"] == "completed" and result["positions_closed"] == ["BTC", "ETH"]


# -- A BATCH'S CLOSES SENT TOGETHER (``ActionTask.run_batch`` with ``batch_steps``) --

def batch_calls(world, accounts: list[str]) -> list:  # noqa: ANN001
    """Calls of ``risk.liquidate_account`` as a worker's batch hands them over, each
    account with its episode open (as the monitor opens it before sending)."""
    from types import SimpleNamespace

    calls = []
    for account in accounts:
        episodes.begin(world.rt.redis, account, f"ep-{account}")
        calls.append(SimpleNamespace(id=f"task-{account}", retries=0, kwargs={}, argsrepr="",
                                     args=[account, "test", f"ep-{account}"]))
    return calls


@pytest.fixture()
def three(world, rt):  # noqa: ANN001, ANN201
    """S1 (BTC and ETH to close) and S2, S3 (BTC only), all below zero equity."""
    for account in ("S2", "S3"):
        world.account(account, 1000)
        world.fill(account, "BTC", "BUY", 1, 45000)
    world.prices({"BTC": 40000})
    return world


def test_a_batch_takes_together_then_closes_together(three, rt, monkeypatch):
    import redis.connection

    from risk_tasks.tasks.liquidation import liquidate_account

    from risk_tasks.runtime import runtime

    runtime().store.current_config()  # the task's runtime, read once per process
    rt.redis.script_load(actions._SNAPSHOT)
    rt.redis.script_load(paper._CLOSE_AND_RECORD)
    calls = batch_calls(three, ["S1", "S2", "S3"])
    sent = []
    original = redis.connection.AbstractConnection.send_packed_command
    handshake = (b"CLIENT", b"PING", b"SELECT", b"AUTH", b"HELLO")

    def counted(self, command, check_health=True):  # noqa: ANN001, ANN202
        first = command[0] if isinstance(command, list) else command
        # not a new connection's set-up (the broker's, for the alerts)
        if not any(f"\r\n{word.decode()}\r\n".encode() in first[:40] for word in handshake):
            sent.append(command)
        return original(self, command, check_health)

    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counted)
    outcomes = liquidate_account.run_batch(calls)
    monkeypatch.undo()
    results = [o.result for o in outcomes]
    assert [r["positions_closed"] for r in results] == [["BTC", "ETH"], ["BTC"], ["BTC"]]
    assert all(o.settled and r["status"] == "completed" for o, r in zip(outcomes, results))
    # the three takes in one round trip, the three first closes in one (S2's and S3's
    # their last: they end there), S1's second close, and the alerts' publish
    assert len(sent) == 4, "\n".join(repr(c[0][:90]) for c in sent)
    for account in ("S1", "S2", "S3"):
        assert rt.store.read_account(account)[0].positions == {}
        assert not rt.redis.exists(episodes.key(account))
        assert not rt.redis.exists(actions.AccountLease(rt.redis, account, 1).key)


def test_a_batch_whose_closes_are_refused_reads_again_and_closes_each_once(three, rt,
                                                                          monkeypatch):
    from risk_tasks.tasks.liquidation import liquidate_account

    # given: the BTC mark moves after the batch read its accounts, before its closes
    original = PaperGateway.close_and_record_many
    moves = []

    def moved_first(self, calls):  # noqa: ANN001, ANN202
        if not moves:
            moves.append(1)
            three.prices({"BTC": 39000})
        return original(self, calls)

    monkeypatch.setattr(PaperGateway, "close_and_record_many", moved_first)
    outcomes = liquidate_account.run_batch(batch_calls(three, ["S1", "S2", "S3"]))
    # then every close was refused together, and each episode read again and closed at
    # the new mark, once
    assert all(o.result["status"] == "completed" for o in outcomes)
    for account in ("S2", "S3"):
        steps = progress(rt, f"ep-{account}")["steps"]
        assert [(s["symbol"], s["price"]) for s in steps] == [("BTC", "39000")]
        assert rt.store.read_account(account)[0].balance == Decimal(1000 - 6000)


def test_a_failed_close_round_trip_is_raised_where_the_close_was_asked(world, rt):
    # given an episode stopped at its first close
    run = actions.Liquidation(rt, PaperGateway(rt.store), "S1", "test", "ep-s1", print,
                              alert_again=True)
    episodes.begin(rt.redis, "S1", "ep-s1")
    steps = run.steps(actions.take_all(rt.redis, [run])[0])
    request = next(steps)
    assert isinstance(request, actions.CloseRequest)
    # when the batch's round trip fails, the episode sees the failure as its own close's
    with pytest.raises(ConnectionError):
        actions.drive(steps, error=ConnectionError("Redis went away"))
    # then nothing was closed and the lease is released for the retry
    assert rt.store.read_account("S1")[0].positions.keys() == {"BTC", "ETH"}
    assert not rt.redis.exists(run.lease.key)
