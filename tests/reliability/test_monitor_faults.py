"""The monitor under faults: its worker SIGKILLed in the middle of a sweep, and its beat
SIGKILLed (not stopped) and restarted while a second beat runs by mistake.

A sweep whose shard died with its worker never reaches its aggregate; the next tick
reports it (counter ``failed``) and runs normally. (The graceful beat outage and two
beats at once are in tests/integration/test_beat.py; this adds a beat that crashes.)
"""

from __future__ import annotations

import time
from collections import Counter

import pytest

from tests.integration.helpers import wait_until
from tests.integration.monitor_world import MonitorWorld, start_monitor_worker
from tests.support.beat import Beat

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ACCOUNTS = 8_000  # so that a cold sweep (every shard cache built from Redis) takes a while
DEADLINE = "2"  # RISK_MONITOR_DEADLINE_SECONDS: an unfinished sweep counts as failed after 2x


@pytest.fixture()
def world(app, rt, private_broker):  # noqa: ANN001, ANN201
    world = MonitorWorld(rt, private_broker)
    world.policies()
    world.symbol("BTC")
    world.prices(BTC=100)
    yield world
    world.close()


def populate(world: MonitorWorld, n: int) -> None:
    world.populate((f"M{i}", 10_000, {}, [("BTC", 10, 100)]) for i in range(n))


def shards_running(world: MonitorWorld, worker, timeout: float = 5.0) -> bool:  # noqa: ANN001
    """Wait until the worker reports an ``evaluate_shard`` executing; False if it never did."""
    inspect = world.app.control.inspect(destination=[worker.hostname], timeout=0.5)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        active = (inspect.active() or {}).get(worker.hostname) or []
        if any(task["name"] == "risk.evaluate_shard" for task in active):
            return True
    return False


def test_monitor_worker_killed_during_evaluate_shard_reports_the_tick_failed(world):
    # given: many accounts, and a fresh monitor worker (cold shard caches)
    populate(world, ACCOUNTS)
    env = {"RISK_MONITOR_DEADLINE_SECONDS": DEADLINE, "RISK_FEED_STALE_SECONDS": "0"}
    killed_mid_sweep = None
    for _attempt in range(3):
        worker = start_monitor_worker(world.broker, env=env)
        failed_before = world.counters().get("failed", 0)
        # when: a tick starts, and the worker is SIGKILLed while its shards run
        world.feed()
        first = world.send_tick().get(timeout=30)
        assert first.get("callback_id"), first
        running = shards_running(world, worker)
        worker.kill()
        done = len(world.shard_results(first["tick_ts"]))
        if running and done < first["shards"]:
            killed_mid_sweep = first
            break
        # every shard finished before the kill landed: try again with a cold worker
        world.aggregate_of(first)
    assert killed_mid_sweep is not None, "the sweep always finished before the kill"
    first = killed_mid_sweep
    # then: that tick never completes
    time.sleep(2 * float(DEADLINE) + 0.5)  # past the point where a sweep counts as dead
    assert world.rt.redis.exists("risk:monitor:pending")
    # when: a new worker starts and the next tick comes
    start_monitor_worker(world.broker, env=env)
    world.queues.purge("shards", "monitor")  # what the dead worker left (at-most-once)
    second = world.tick()
    # then: the dead sweep is reported failed, and this tick is normal and complete
    assert second.skipped is None, second.result
    assert world.counters()["failed"] == failed_before + 1
    agg = second.aggregate
    assert agg["counters"]["failed"] == failed_before + 1
    assert (agg["accounts"], agg["failed_shards"]) == (ACCOUNTS, [])
    last = world.rt.redis.hgetall("risk:monitor:last")
    assert float(last[b"tick_ts"]) == second.tick_ts
    assert int(last[b"accounts"]) == ACCOUNTS
    # and so is the one after it
    third = world.tick()
    assert (third.aggregate["accounts"], third.aggregate["failed_shards"]) == (ACCOUNTS, [])
    assert third.aggregate["counters"]["failed"] == failed_before + 1
    print(f"\nshard kill: while evaluate_shard ran, {done} of {first['shards']} shards done at the kill; next tick "
          f"{agg['accounts']} accounts in {agg['duration_ms']:.0f} ms, failed counter "
          f"{agg['counters']['failed']}")


def test_beat_sigkilled_and_restarted_beside_a_second_beat_never_doubles_a_tick(
        world, private_broker, tmp_path):
    # given: a monitor worker and two beats (one by mistake)
    for i in range(8):
        world.account(f"B{i}", 10_000)
        world.position(f"B{i}", "BTC", 10, 100)
    start_monitor_worker(world.broker, env={"RISK_FEED_STALE_SECONDS": "0"})
    beats = [Beat(tmp_path, env=private_broker.env).start() for _ in range(2)]

    def aggregates() -> list[dict]:
        return [r for r in world.results() if isinstance(r, dict) and "failed_shards" in r]

    try:
        wait_until(lambda: len(aggregates()) >= 3, timeout=40, interval=0.2,
                   message="ticks from the two beats")
        # when: both beats crash (SIGKILL: no clean shutdown, schedule file as it was)
        for beat in beats:
            beat.process.kill()
            beat.process.wait(timeout=10)
        crashed = time.time()
        time.sleep(3)
        # and one is started again
        restarted = Beat(tmp_path, env=private_broker.env, name=beats[0].name).start()
        beats.append(restarted)
        wait_until(lambda: any(a["tick_ts"] > crashed + 2 for a in aggregates()), timeout=40,
                   interval=0.2, message="a tick after the restart")
        time.sleep(2)
    finally:
        for beat in beats:
            beat.stop()
    wait_until(lambda: world.queues.count("monitor") == 0 and world.queues.count("shards") == 0
               and not world.rt.redis.exists("risk:monitor:pending"), timeout=20,
               message="last sweep finished")
    # then: no tick ran twice, and every shard of every tick was evaluated once
    done = Counter(a["tick_ts"] for a in aggregates())
    assert max(done.values()) == 1
    for tick_ts in done:
        assert sorted(r["shard"] for r in world.shard_results(tick_ts)) == [0, 1, 2, 3]
    # and the crash shows as missed seconds
    ticks = sorted(done)
    gap = max(b - a for a, b in zip(ticks, ticks[1:]))
    assert gap >= 3
    assert world.counters()["missed"] >= round(gap) - 1
    assert world.counters().get("duplicate", 0) >= 1  # the second beat's copies
    print(f"\nbeat crash: {len(done)} ticks, none doubled; gap {gap:.0f} s, missed counter "
          f"{world.counters()['missed']}, duplicates skipped {world.counters()['duplicate']}")
