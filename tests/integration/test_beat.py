"""The 1 s schedule through a real ``celery beat`` process and a real monitor worker:
ticks every second, two beats by mistake never double a sweep, and a beat outage shows
up as missed ticks.

The beat and the worker run on a broker of their own; the tick deadline and everything
else are the shipped defaults (only the feed-stale platform fault is off: no feed runs
here).
"""

from __future__ import annotations

import time
from collections import Counter

import pytest

from tests.integration.helpers import wait_until
from tests.integration.monitor_world import MonitorWorld
from tests.support.beat import Beat

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WORKER_ENV = {"RISK_FEED_STALE_SECONDS": "0"}
ACCOUNTS = 8


@pytest.fixture()
def world(app, rt, private_broker):  # noqa: ANN001, ANN201
    world = MonitorWorld(rt, private_broker)
    world.policies()
    world.symbol("BTC")
    world.prices(BTC=100)
    for i in range(ACCOUNTS):
        world.account(f"A{i}", 10_000)
        world.position(f"A{i}", "BTC", 10, 100)
    private_broker.start_worker(queues="monitor,shards", pool="prefork", concurrency=2,
                                env=WORKER_ENV)
    yield world
    world.close()


@pytest.fixture()
def beats(private_broker, tmp_path):  # noqa: ANN001, ANN201
    started: list[Beat] = []

    def start() -> Beat:
        beat = Beat(tmp_path, env=private_broker.env).start()
        started.append(beat)
        return beat

    yield start
    for beat in started:
        beat.stop()


def aggregates(world: MonitorWorld) -> list[dict]:
    """Every aggregate_tick result stored so far (one per completed tick)."""
    return [r for r in world.results() if isinstance(r, dict) and "failed_shards" in r]


def tick_results(world: MonitorWorld) -> list[dict]:
    """Every monitor_tick result stored so far (ran or skipped)."""
    return [r for r in world.results() if isinstance(r, dict) and "callback_id" in r]


def claimed_ticks(world: MonitorWorld) -> list[float]:
    return sorted(float(k.decode().split(":", 2)[2])
                  for k in world.rt.redis.scan_iter(match="risk:tick:*"))


def settle(world: MonitorWorld) -> None:
    """After the beats stopped: wait until every tick they sent has run or expired
    (ticks carry ``expires`` 1 s) and no sweep is running."""
    stopped = time.monotonic()

    def settled() -> bool:
        return (time.monotonic() > stopped + 1.5 and world.queues.count("monitor") == 0
                and world.queues.count("shards") == 0
                and not world.rt.redis.exists("risk:monitor:pending"))

    wait_until(settled, timeout=20, interval=0.1, message="last sweep finished")


def test_beat_sends_a_tick_every_second_and_each_sweep_completes(world, beats):
    # when
    beat = beats()
    wait_until(lambda: len(aggregates(world)) >= 4, timeout=30, interval=0.2,
               message="four ticks completed")
    beat.stop()
    settle(world)
    done = aggregates(world)
    # then: whole seconds, each swept once, over every account
    ticks = sorted(a["tick_ts"] for a in done)
    assert all(t == int(t) for t in ticks)
    assert len(set(ticks)) == len(ticks)
    assert {a["accounts"] for a in done} == {ACCOUNTS}
    assert all(a["failed_shards"] == [] for a in done)
    # and operators see the last one
    last = world.rt.redis.hgetall("risk:monitor:last")
    assert float(last[b"tick_ts"]) == ticks[-1]


def test_two_beats_at_once_never_run_a_tick_twice(world, beats):
    # when: a second beat is started by mistake
    first, second = beats(), beats()
    wait_until(lambda: world.counters().get("duplicate", 0) >= 3
               and len(aggregates(world)) >= 3, timeout=30, interval=0.2,
               message="both beats sending")
    first.stop()
    second.stop()
    settle(world)
    # then: every tick_ts completed at most once, each shard evaluated once for it
    done = Counter(a["tick_ts"] for a in aggregates(world))
    assert done and max(done.values()) == 1
    for tick_ts in done:
        assert sorted(r["shard"] for r in world.shard_results(tick_ts)) == [0, 1, 2, 3]
    # and every second copy was skipped as a duplicate, and counted
    ran = Counter(r["tick_ts"] for r in tick_results(world) if not r.get("skipped"))
    assert max(ran.values()) == 1
    skipped = [r for r in tick_results(world) if r.get("skipped") == "duplicate"]
    assert len(skipped) == world.counters()["duplicate"] >= 3
    assert {r["tick_ts"] for r in skipped} <= set(claimed_ticks(world))
    # and so no more than one sweep per second
    span = max(done) - min(done)
    assert len(done) <= span + 1


def test_beat_outage_shows_as_missed_ticks(world, beats):
    # given: beat has driven a few ticks, then stops
    beat = beats()
    wait_until(lambda: len(aggregates(world)) >= 2, timeout=30, interval=0.2,
               message="two ticks completed")
    beat.stop()
    settle(world)
    before = claimed_ticks(world)[-1]
    missed_before = world.counters().get("missed", 0)
    # when: it stays down for about three seconds, then comes back
    time.sleep(3)  # the outage: time has to pass
    beat = beats()
    wait_until(lambda: any(a["tick_ts"] > before for a in aggregates(world)), timeout=30,
               interval=0.2, message="a tick after the restart")
    beat.stop()
    settle(world)
    # then: the seconds between the last tick before and the first after are missed
    since = [t for t in claimed_ticks(world) if t >= before]
    after = since[1]
    assert after - before >= 3
    gaps = [b - a for a, b in zip(since, since[1:])]
    expected = sum(round(g) - 1 for g in gaps if g > 1.5)  # the outage, and any late tick
    assert expected >= round(after - before) - 1 >= 2
    assert world.counters()["missed"] - missed_before == expected
    latest = max(aggregates(world), key=lambda a: a["tick_ts"])
    assert latest["counters"]["missed"] == world.counters()["missed"]
