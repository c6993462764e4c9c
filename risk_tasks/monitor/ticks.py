"""Tick bookkeeping: never stack, never double, always account for every second.

- A tick is claimed by its ``tick_ts`` (``SET NX``): two beats, or a repeated message,
  run it once; the second is counted as ``duplicate``.
- A tick older than the deadline when it starts is dropped (``late``).
- While a tick's sweep is still running the next one is skipped (``overlap``). A sweep
  that never finished (a worker died in it) is reported ``failed`` by the next tick.
- Seconds that no tick covered (beat stopped) are counted as ``missed``.
- A price feed silent for longer than ``RISK_FEED_STALE_SECONDS`` puts the platform in
  REDUCING (a platform fault named by the configuration); it goes back to ACTIVE when
  the feed returns, and never lifts a stop it did not set.

Counters live in Redis (``risk:monitor:counters``) so every process sees the same ones;
``aggregate_tick`` reports them and the metrics count them.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from risk_tasks import alerting
from risk_tasks.engine.model import TradingState
from risk_tasks.logs import log_event
from risk_tasks.metrics import (
    ACTIVE_ACCOUNTS, EMERGENCY_STOP_ACTIVE, TICK_DURATION, TICK_LAG, TICKS, TICKS_SKIPPED,
)

log = logging.getLogger(__name__)

PENDING = "risk:monitor:pending"
LAST = "risk:monitor:last"
COUNTERS = "risk:monitor:counters"
LAST_TICK = "risk:monitor:last_tick"
FEED_FAULT_BY = "monitor:feed"

_FINISH = """
local pending = redis.call('HGET', KEYS[1], 'tick_ts')
if pending == ARGV[1] then
  local started = redis.call('HGET', KEYS[1], 'started')
  redis.call('DEL', KEYS[1])
  return started
end
return false
"""


def start(rt, tick_ts: Any) -> dict[str, Any] | None:  # noqa: ANN001
    """Decide whether this tick runs. None: run it; otherwise the skip result."""
    r = rt.redis
    settings = rt.settings
    now = rt.clock.time()
    if isinstance(tick_ts, bool) or not isinstance(tick_ts, (int, float)) \
            or not math.isfinite(tick_ts) or tick_ts <= 0:
        return _skip(rt, tick_ts, "invalid")
    deadline = settings.monitor_deadline_seconds
    if now - tick_ts > deadline:
        return _skip(rt, tick_ts, "late")
    if not r.set(f"risk:tick:{tick_ts!r}", now, nx=True, ex=3600):
        return _skip(rt, tick_ts, "duplicate")
    pending = r.hgetall(PENDING)
    if pending:
        started = float(pending.get(b"started", b"0"))
        if now - started <= max(deadline, settings.monitor_interval_seconds) * 2:
            return _skip(rt, tick_ts, "overlap")
        # The previous sweep never reached its aggregate: a shard died with its worker.
        r.hincrby(COUNTERS, "failed", 1)
        TICKS.labels("failed").inc()
        log_event(log, "tick never completed", logging.WARNING,
                  tick_ts=float(pending.get(b"tick_ts", b"0")))
    pipe = r.pipeline(transaction=True)
    pipe.delete(PENDING)
    pipe.hset(PENDING, mapping={"tick_ts": repr(tick_ts), "started": repr(now)})
    pipe.expire(PENDING, int(max(deadline, 1) * 30))
    pipe.getset(LAST_TICK, repr(tick_ts))
    last = pipe.execute()[-1]
    if last is not None:
        gap = tick_ts - float(last)
        interval = settings.monitor_interval_seconds
        if gap > 1.5 * interval:
            missed = int(round(gap / interval)) - 1
            r.hincrby(COUNTERS, "missed", missed)
            TICKS_SKIPPED.labels("missed").inc(missed)
    _platform_faults(rt, now)
    return None


def _skip(rt, tick_ts: Any, reason: str) -> dict[str, Any]:  # noqa: ANN001
    rt.redis.hincrby(COUNTERS, reason, 1)
    TICKS_SKIPPED.labels(reason).inc()
    log_event(log, "tick skipped", logging.INFO, tick_ts=tick_ts, reason=reason)
    return {"tick_ts": tick_ts, "shards": 0, "callback_id": None, "skipped": reason}


def _platform_faults(rt, now: float) -> None:  # noqa: ANN001
    limit = rt.settings.feed_stale_seconds
    if not limit:
        return
    store = rt.store
    feed = store.feed_status()
    if feed["last_ts"] is None:
        return  # no feed yet: every check is no_price already
    age = now - feed["last_ts"]
    state = store.platform_state()
    if age > limit and state["state"] == TradingState.ACTIVE.value:
        _, changed = store.set_platform_state(
            TradingState.REDUCING, f"price feed stale for {age:.0f} s", FEED_FAULT_BY, None,
            only_from=[TradingState.ACTIVE])
        if changed:
            from risk_tasks.app import send_alert

            send_alert(alerting.make_alert(
                "critical", "platform_fault", f"price feed stale for {age:.0f} s: platform "
                "set to REDUCING", details={"feed_age_s": round(age, 1)}))
    elif age <= limit and state["state"] == TradingState.REDUCING.value \
            and state["by"] == FEED_FAULT_BY:
        store.set_platform_state(TradingState.ACTIVE, "price feed back", FEED_FAULT_BY, None,
                                 only_from=[TradingState.REDUCING])


def shard_overlap(results: list[dict]) -> float | None:
    """Summed shard time over the span from the first shard's start to the last one's
    end: 1.0 when shards ran one after another, 2.0 when two ran at every moment."""
    spans = [x["span"] for x in results if isinstance(x.get("span"), list)]
    if not spans:
        return None
    whole = max(end for _, end in spans) - min(start for start, _ in spans)
    if whole <= 0:
        return None
    return round(sum(end - start for start, end in spans) / whole, 2)


def finish(rt, results: list, tick_ts: float) -> dict[str, Any]:  # noqa: ANN001
    """Sum the shard results; release the tick; record and report it."""
    r = rt.redis
    now = rt.clock.time()
    started_raw = r.eval(_FINISH, 1, PENDING, repr(tick_ts))
    started = float(started_raw) if started_raw else None
    results = [x for x in results if isinstance(x, dict)]
    failed = sorted(x.get("shard", -1) for x in results if x.get("failed"))
    violations = {"soft": 0, "hard": 0, "emergency": 0}
    for x in results:
        for k, v in (x.get("violations") or {}).items():
            violations[k] = violations.get(k, 0) + v
    counters = {k.decode(): int(v) for k, v in r.hgetall(COUNTERS).items()}
    lag = now - tick_ts
    duration = now - started if started is not None else lag
    summary = {
        "tick_ts": tick_ts,
        "accounts": sum(x.get("accounts", 0) for x in results),
        "shards": len(results),
        "duration_ms": round(duration * 1000, 3),
        "lag_ms": round(lag * 1000, 3),
        "violations": violations,
        "liquidations_started": sum(x.get("liquidations_started", 0) for x in results),
        "failed_shards": failed,
        "emergency_stops": sum(x.get("emergency_stops", 0) for x in results),
        "breaker_trips": sum(x.get("breaker_trips", 0) for x in results),
        "alerts": sum(x.get("alerts", 0) for x in results),
        "unpriced_accounts": sum(x.get("unpriced", 0) for x in results),
        "shard_ms_max": max((x.get("duration_ms", 0) for x in results), default=0),
        # Shards a process had to read whole from Redis (first sight, or state replaced).
        "cache_loads": sum(1 for x in results if x.get("cache") == "load"),
        # Each step's time in the slowest shard (where a slow tick went).
        "slowest_shard_phases_ms": max(results, key=lambda x: x.get("duration_ms", 0),
                                       default={}).get("phases_ms", {}),
        # How many shards ran at once, on average, from the first start to the last end
        # (about the number of monitor processes when they all take part).
        "shard_overlap": shard_overlap(results),
        "counters": counters,
    }
    TICKS.labels("failed_shards" if failed else "completed").inc()
    TICK_DURATION.observe(duration)
    TICK_LAG.observe(lag)
    ACTIVE_ACCOUNTS.set(summary["accounts"])
    EMERGENCY_STOP_ACTIVE.set(
        1 if rt.store.platform_state()["state"] == TradingState.HALTED.value else 0)
    flat = {k: v for k, v in summary.items() if not isinstance(v, (dict, list))}
    flat.update({f"violations_{k}": v for k, v in violations.items()},
                failed_shards=",".join(map(str, failed)),
                violations=sum(violations.values()), finished_at=repr(time.time()))
    r.hset(LAST, mapping={k: str(v) for k, v in flat.items()})
    return summary
