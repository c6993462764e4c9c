"""Tick bookkeeping and what the sweep keeps: duplicate, overlapping, late and missed
ticks, a failing shard, peaks and day-start equity, the stale-feed platform fault and
the stress test, through real monitor workers on a broker of their own.

Each test starts its monitor worker (prefork, two processes, on ``monitor,shards``
unless it says otherwise) on a fresh state store, and sends ticks itself.
"""

from __future__ import annotations

import time
from decimal import Decimal

import orjson
import pytest

from models.tables import TradingStateChangeRow
from risk_tasks.engine.metrics import compute_metrics, is_liquidatable
from risk_tasks.engine.model import TradingState
from risk_tasks.state import keys
from tests.integration.helpers import wait_until
from tests.integration.monitor_world import (
    AGGREGATE_KEYS, MonitorWorld, ids_in_shard, shard_of, start_monitor_worker,
)

pytestmark = pytest.mark.integration


@pytest.fixture()
def world(app, rt, private_broker):  # noqa: ANN001, ANN201
    """A fresh state store with the default policies and BTC (10x, 5 %), marked at 100
    by the feed of the first tick."""
    world = MonitorWorld(rt, private_broker)
    world.policies()
    world.symbol("BTC")
    world.marks["BTC"] = Decimal(100)
    yield world
    world.close()


def liquidatable(world: MonitorWorld, account_id: str) -> None:
    """400 of equity against 500 of maintenance (and leverage 25: hard violations)."""
    world.account(account_id, 400)
    world.position(account_id, "BTC", 100, 100)


def healthy(world: MonitorWorld, account_id: str) -> None:
    world.account(account_id, 10_000)
    world.position(account_id, "BTC", 10, 100)


def log_events(worker, event: str) -> list[dict]:  # noqa: ANN001
    found = []
    for line in worker.logs().splitlines():
        if line.startswith("{"):
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if record.get("event") == event:
                found.append(record)
    return found


# -- THE TICK AND ITS AGGREGATE --

def test_tick_returns_its_chord_and_the_aggregate_reports_the_pinned_keys(world):
    # given
    start_monitor_worker(world.broker)
    for i in range(6):
        healthy(world, f"A{i}")
    liquidatable(world, "L")
    # when
    tick = world.tick()
    # then: monitor_tick names its chord
    assert set(tick.result) == {"tick_ts", "shards", "callback_id"}
    assert tick.result["tick_ts"] == tick.tick_ts and tick.result["shards"] == 4
    # and the aggregate has every pinned key, with the sweep's figures
    agg = tick.aggregate
    assert set(agg) >= AGGREGATE_KEYS
    assert agg["tick_ts"] == tick.tick_ts
    assert (agg["accounts"], agg["shards"], agg["failed_shards"]) == (7, 4, [])
    assert agg["liquidations_started"] == 1
    assert agg["violations"] == {"soft": 0, "hard": 2, "emergency": 0}
    assert isinstance(agg["duration_ms"], float) and agg["duration_ms"] >= 0
    assert isinstance(agg["lag_ms"], float)
    # and every shard reported once
    assert sorted(r["shard"] for r in world.shard_results(tick.tick_ts)) == [0, 1, 2, 3]
    # and the last tick is visible to operators
    last = world.rt.redis.hgetall("risk:monitor:last")
    assert float(last[b"tick_ts"]) == tick.tick_ts and last[b"accounts"] == b"7"


# -- NEVER DOUBLE, NEVER STACK --

def test_duplicate_tick_is_skipped_and_doubles_nothing(world):
    # given: a sweep that sends a liquidation and two alerts
    start_monitor_worker(world.broker)
    liquidatable(world, "L")
    healthy(world, "H")
    first = world.tick()
    sent = (len(world.liquidations()), len(world.alerts()))
    assert sent == (1, 2)
    # when: the same tick_ts comes again
    again = world.tick(first.tick_ts)
    # then: skipped, counted, nothing evaluated or sent twice
    assert again.skipped == "duplicate" and again.result["callback_id"] is None
    assert again.aggregate is None
    assert world.counters()["duplicate"] == 1
    assert sorted(r["shard"] for r in world.shard_results(first.tick_ts)) == [0, 1, 2, 3]
    assert (len(world.liquidations()), len(world.alerts())) == sent


def test_two_copies_of_a_tick_sent_at_once_run_once(world):
    # given
    start_monitor_worker(world.broker)
    liquidatable(world, "L")
    world.feed()
    tick_ts = world.next_tick_ts()
    # when: two beats send the same tick at the same moment
    results = [p.get(timeout=30) for p in [world.send_tick(tick_ts), world.send_tick(tick_ts)]]
    # then: one runs, the other is a duplicate
    assert sorted(r.get("skipped") or "ran" for r in results) == ["duplicate", "ran"]
    [ran] = [r for r in results if not r.get("skipped")]
    assert world.aggregate_of(ran)["accounts"] == 1
    assert sorted(r["shard"] for r in world.shard_results(tick_ts)) == [0, 1, 2, 3]
    assert len(world.liquidations()) == 1
    assert world.counters()["duplicate"] == 1


def test_tick_that_starts_while_the_previous_sweep_runs_is_skipped(world):
    # given: a monitor worker whose shards wait (it stops consuming them for a moment),
    # so the first tick's sweep is still running when the next tick comes
    worker = start_monitor_worker(world.broker)
    liquidatable(world, "L")
    control = world.app.control
    control.cancel_consumer("shards", destination=[worker.hostname], reply=True, timeout=5)

    def not_consuming_shards() -> bool:
        replies = control.inspect(destination=[worker.hostname], timeout=1).active_queues()
        queues = (replies or {}).get(worker.hostname)
        return queues is not None and "shards" not in {q["name"] for q in queues}

    wait_until(not_consuming_shards, timeout=10, message="shards consumer cancelled")
    world.feed()
    first = world.send_tick().get(timeout=30)
    assert first.get("callback_id") and world.queues.count("shards") == 4
    # when: the next second's tick starts
    second = world.send_tick().get(timeout=30)
    # then: skipped, not stacked
    assert second["skipped"] == "overlap" and second["callback_id"] is None
    assert world.counters()["overlap"] == 1
    # and the first sweep completes once its shards run
    control.add_consumer("shards", destination=[worker.hostname], reply=True, timeout=5)
    aggregate = world.aggregate_of(first)
    assert aggregate["accounts"] == 1 and aggregate["failed_shards"] == []
    assert world.shard_results(second["tick_ts"]) == []
    assert len(world.liquidations()) == 1
    # and the tick after it runs normally
    third = world.tick()
    assert third.skipped is None and third.aggregate["accounts"] == 1
    assert third.aggregate["counters"]["overlap"] == 1


def test_late_and_invalid_ticks_are_dropped_and_counted(world):
    # given
    start_monitor_worker(world.broker)
    liquidatable(world, "L")
    world.feed()
    # when: a tick a minute old (a backlog) and one with no usable tick_ts
    late = world.send_tick(time.time() - 60).get(timeout=30)
    invalid = world.app.send_task("risk.monitor_tick", ["soon"]).get(timeout=30)
    # then: both dropped, nothing evaluated or sent
    assert late["skipped"] == "late" and late["callback_id"] is None
    assert invalid["skipped"] == "invalid"
    assert world.shard_results(late["tick_ts"]) == []
    assert world.liquidations() == [] and world.alerts() == []
    # and the counts show in the next aggregate
    tick = world.tick()
    assert tick.aggregate["counters"] == {"late": 1, "invalid": 1}
    assert len(world.liquidations()) == 1


def test_seconds_no_tick_covered_are_counted_as_missed(world):
    # given
    start_monitor_worker(world.broker)
    healthy(world, "H")
    first = world.tick()
    assert first.aggregate["counters"].get("missed", 0) == 0
    # when: the next tick comes four seconds later
    later = world.tick(first.tick_ts + 4)
    # then: three seconds were missed
    assert later.aggregate["counters"]["missed"] == 3
    assert world.tick(later.tick_ts + 1).aggregate["counters"]["missed"] == 3


# -- A FAILING SHARD --

def test_failing_shard_is_retried_then_reported_and_the_next_tick_is_normal(world):
    # given: three accounts in shard 1, one of whose hashes holds garbage (a hand edit,
    # a buggy writer), and two healthy accounts elsewhere
    worker = start_monitor_worker(world.broker)
    broken, *others = ids_in_shard("s1-", 1, 3)
    liquidatable(world, broken)
    for account_id in others:
        healthy(world, account_id)
    elsewhere = ids_in_shard("s2-", 2, 2)
    for account_id in elsewhere:
        healthy(world, account_id)
    world.rt.redis.hset(keys.account(broken), "balance", "not-a-number")
    # when
    try:
        tick = world.tick()
    except Exception as exc:  # the chord failed instead of reporting the shard
        raise AssertionError(f"the tick did not complete: {exc!r}") from exc
    # then: the tick completes and names the failed shard; the others were swept
    assert tick.aggregate["failed_shards"] == [1]
    assert tick.aggregate["accounts"] == 2
    assert world.liquidations() == []
    # and the shard was tried three times (two retries) before it was reported
    failures = [e for e in log_events(worker, "shard evaluation failed")
                if e.get("shard") == 1 and e.get("tick_ts") == tick.tick_ts]
    assert sorted(e["retries"] for e in failures) == [0, 1, 2]
    assert "ValueError" in failures[0]["error"]
    # when: the account is written again, correctly
    world.account(broken, 400)
    fixed = world.tick()
    # then: every shard is swept, and the account's breach is acted on
    assert fixed.aggregate["failed_shards"] == []
    assert fixed.aggregate["accounts"] == 5
    assert [args[0] for args in world.liquidations()] == [broken]


# -- PEAKS AND DAY-START EQUITY --

def test_monitor_raises_the_peak_and_a_later_drop_shows_as_drawdown(world):
    # given: 10 000, long 100 BTC at 100 (a pretrade process serves get_risk_metrics)
    start_monitor_worker(world.broker, queues="monitor,shards,pretrade")
    world.account("P", 10_000)
    world.position("P", "BTC", 100, 100)
    world.tick()
    # when: BTC rises to 120, a tick, then falls to 105
    world.prices(BTC=120)
    world.tick()
    raised, _ = world.rt.store.read_account("P")
    world.prices(BTC=105)
    world.tick()
    # then: the peak followed equity up to 12 000 and stayed there
    assert raised.peak_equity == 12_000
    after, _ = world.rt.store.read_account("P")
    assert after.peak_equity == 12_000
    metrics = world.run_task("risk.get_risk_metrics", "P")
    assert metrics["equity"] == 10_500
    assert metrics["peak_equity"] == 12_000
    assert metrics["drawdown_max"] == pytest.approx(1_500 / 12_000, rel=1e-12)


def test_reset_daily_resets_day_start_equity_at_the_next_tick(world):
    # given: the day started at 10 000 and BTC has fallen 15 %
    start_monitor_worker(world.broker)
    world.account("R", 10_000)
    world.position("R", "BTC", 100, 100)
    world.tick()
    world.prices(BTC=85)
    before = world.tick()
    assert before.aggregate["violations"]["soft"] == 1  # Daily Drawdown Warning
    assert world.rt.store.read_account("R")[0].daily_start_equity == 10_000
    # when: the 00:00 UTC job runs
    world.app.send_task("risk.reset_daily")
    day_key = keys.shard_dayid(shard_of("R"))
    wait_until(lambda: world.rt.redis.get(day_key) == b"reset", timeout=20,
               message="reset_daily ran")
    after = world.tick()
    # then: the day starts again at today's equity
    assert world.rt.store.read_account("R")[0].daily_start_equity == 8_500
    assert after.aggregate["violations"]["soft"] == 0


# -- THE PRICE FEED AS A PLATFORM FAULT --

def test_stale_feed_puts_the_platform_in_reducing_until_it_is_fresh_again(world):
    # given: a monitor that calls the feed stale after 2 s, and marks 5 s old (still
    # usable for pricing: RISK_PRICE_STALE_SECONDS is 30 here)
    start_monitor_worker(world.broker, env={"RISK_FEED_STALE_SECONDS": "2"})
    healthy(world, "H")
    world.prices(ts=time.time() - 5, BTC=100)
    store = world.rt.store
    # when
    stale = world.tick(feed=False)
    # then: the platform reduces, with one critical alert
    state = store.platform_state()
    assert (state["state"], state["by"]) == ("REDUCING", "monitor:feed")
    [fault] = [a for a in world.alerts() if a["kind"] == "platform_fault"]
    assert fault["level"] == "critical"
    assert stale.aggregate["accounts"] == 1
    # and a second stale tick changes nothing and alerts nothing more
    world.tick(feed=False)
    assert store.platform_state()["state"] == "REDUCING"
    assert len([a for a in world.alerts() if a["kind"] == "platform_fault"]) == 1
    # when: the feed is back
    world.tick(feed=True)
    # then: ACTIVE again
    assert store.platform_state()["state"] == "ACTIVE"
    world.drain()
    changes = world.rows(TradingStateChangeRow, scope="global")
    assert [(c.new_state, c.changed_by) for c in changes] == [("REDUCING", "monitor:feed"),
                                                             ("ACTIVE", "monitor:feed")]


def test_feed_fault_never_lifts_or_overrides_a_state_it_did_not_set(world):
    # given: the monitor calls the feed stale after 2 s
    start_monitor_worker(world.broker, env={"RISK_FEED_STALE_SECONDS": "2"})
    healthy(world, "H")
    store = world.rt.store
    # when: an operator put the platform in REDUCING, and the feed is fresh
    store.set_platform_state(TradingState.REDUCING, "drill", "ops", None)
    world.tick(feed=True)
    # then: the monitor does not lift it
    assert (store.platform_state()["state"], store.platform_state()["by"]) == ("REDUCING", "ops")
    # when: an operator halted trading, and the feed goes stale
    store.set_platform_state(TradingState.HALTED, "drill", "ops", "stop-1")
    time.sleep(2.5)  # let the feed age past its limit
    world.tick(feed=False)
    # then: still HALTED, by the operator
    assert (store.platform_state()["state"], store.platform_state()["by"]) == ("HALTED", "ops")


# -- STRESS TEST --

def test_stress_test_reports_breaches_and_shortfall_and_changes_nothing(world):
    # given: five accounts long or short BTC and ETH, swept once
    start_monitor_worker(world.broker)
    world.symbol("ETH", "0.05", "0.02")
    world.prices(BTC=100, ETH=2_000)
    book = {
        "long-btc": (1_500, [("BTC", 100, 100)]),
        "long-btc-rich": (9_000, [("BTC", 100, 100)]),
        "short-eth": (2_300, [("ETH", -10, 2_000)]),
        "mixed": (2_300, [("BTC", 50, 100), ("ETH", -5, 2_000)]),
        "flat": (500, []),
    }
    for account_id, (balance, positions) in book.items():
        world.account(account_id, balance)
        for symbol, quantity, price in positions:
            world.position(account_id, symbol, quantity, price)
    world.tick()
    before = world.snapshot()
    shocks = {"BTC": -0.2, "ETH": 0.1}
    # and the exact answer
    config = world.rt.store.current_config()
    marks = {s: m * (1 + Decimal(str(shocks[s]))) for s, m in world.marks.items()}
    expected = {}
    for account_id in book:
        account, _ = world.rt.store.read_account(account_id)
        m = compute_metrics(account.balance, account.positions, marks, config.specs,
                            account.peak_equity, account.daily_start_equity)
        if is_liquidatable(m):
            expected[account_id] = m.maintenance_margin - m.equity
    assert set(expected) == {"long-btc", "short-eth", "mixed"}  # the arrangement's intent
    # when
    result = world.run_task("risk.stress_test", shocks, timeout=90)
    # then
    assert result["ok"] is True and result["accounts"] == len(book)
    assert result["breaching"] == len(expected)
    assert {row["account_id"] for row in result["worst"]} == set(expected)
    shortfalls = [row["shortfall"] for row in result["worst"]]
    assert shortfalls == sorted(shortfalls, reverse=True)
    for row in result["worst"]:
        assert row["shortfall"] == pytest.approx(float(expected[row["account_id"]]), rel=1e-9)
    assert result["total_shortfall"] == pytest.approx(float(sum(expected.values())), rel=1e-9)
    # and nothing moved: no action enqueued, not one key of the hot state changed
    assert world.liquidations() == [] and world.unwinds() == []
    assert world.snapshot() == before
    # and a shock that makes no sense is refused, not run
    refused = world.run_task("risk.stress_test", {"BTC": -1.5})
    assert refused["ok"] is False and "BTC" in refused["error"]


# -- THE SHARD CACHE --

def test_state_replaced_between_two_ticks_is_swept_as_it_is_now(world, private_broker):
    # given: one monitor process that swept one breaching account in each shard
    private_broker.start_worker(queues="monitor,shards", pool="solo",
                                env={"RISK_MONITOR_DEADLINE_SECONDS": "5"})
    old = [ids_in_shard(f"old{k}-", k, 1)[0] for k in range(4)]
    for account_id in old:
        liquidatable(world, account_id)
    assert world.tick().aggregate["liquidations_started"] == 4
    # when: the state is emptied and a new snapshot loaded before the next tick (beat
    # paused, `riskctl load` into a fresh Redis, the monitor workers left running)
    world.rt.redis.flushdb()
    world.policies()
    world.symbol("BTC")
    new = [a for k in range(4) for a in ids_in_shard(f"new{k}-", k, 3)]
    for account_id in new:
        liquidatable(world, account_id)
    tick = world.tick()
    # then: the sweep acts on the accounts there are now, and only on them
    assert tick.aggregate["accounts"] == 12
    assert sorted(args[0] for args in world.liquidations()[4:]) == sorted(new)


# -- WARM CACHES --

@pytest.mark.parametrize("preload", [True, False])
def test_a_monitor_worker_reads_every_shard_before_it_starts(world, preload):
    """With the preload (the default), no tick waits for a process's first sight of a
    shard, and what changed after the preload is caught up from the change stream;
    without it, each process reads a shard whole the first time it draws it."""
    # given: accounts in every shard before the worker starts
    for shard in range(4):
        for account_id in ids_in_shard(f"W{shard}-", shard, 3):
            healthy(world, account_id)
    worker = start_monitor_worker(world.broker,
                                  env={"RISK_MONITOR_PRELOAD": "1" if preload else "0"})
    # and one more account after it started
    liquidatable(world, "late")
    # when
    ticks = [world.tick() for _ in range(3)]
    # then every tick swept every account, the late one among them
    assert [t.aggregate["accounts"] for t in ticks] == [13, 13, 13]
    assert ticks[0].aggregate["liquidations_started"] == 1
    loads = [t.aggregate["cache_loads"] for t in ticks]
    if preload:
        assert loads == [0, 0, 0]
        assert "shards preloaded" in worker.logs()
    else:
        assert loads[0] > 0 and "shards preloaded" not in worker.logs()
