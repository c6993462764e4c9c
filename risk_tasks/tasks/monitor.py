"""Monitor tasks: the 1 s tick, its shards and its aggregate; the stress test; the
daily reset. Queues: ``monitor`` (tick, aggregate, stress, reset), ``shards``."""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from celery import chord, group

from risk_tasks.logs import log_event
from risk_tasks.monitor import ticks
from risk_tasks.monitor.sweep import ShardEvaluator
from risk_tasks.runtime import runtime
from risk_tasks.state import keys
from risk_tasks.tasks.base import risk_task

log = logging.getLogger(__name__)

SHARD_RETRIES = 2
STRESS_TIMEOUT = 60.0
MAX_SHOCK = 10.0

_evaluators: dict[int, ShardEvaluator] = {}


def evaluator() -> ShardEvaluator:
    rt = runtime()
    found = _evaluators.get(id(rt))
    if found is None:
        _evaluators.clear()
        found = _evaluators[id(rt)] = ShardEvaluator(rt)
    return found


@risk_task("risk.monitor_tick", ignore_result=False, soft_time_limit=10, time_limit=20)
def monitor_tick(tick_ts: Any) -> dict:
    """One sweep: a chord of one ``evaluate_shard`` per shard and ``aggregate_tick``."""
    rt = runtime()
    skipped = ticks.start(rt, tick_ts)
    if skipped is not None:
        return skipped
    shards = rt.settings.shards
    header = group(evaluate_shard.s(shard, tick_ts) for shard in range(shards))
    result = chord(header)(aggregate_tick.s(tick_ts))
    return {"tick_ts": tick_ts, "shards": shards, "callback_id": result.id}


@risk_task("risk.evaluate_shard", bind=True, ignore_result=False, acks_late=False,
           soft_time_limit=30, time_limit=45, max_retries=SHARD_RETRIES)
def evaluate_shard(self, shard: int, tick_ts: float, shocks: dict | None = None) -> dict:
    """Evaluate every account of a shard (and act on breaches, unless ``shocks``).

    At-most-once: a shard that died with its worker is not worth redelivering later,
    the next tick covers it. A failure is retried while the tick is fresh; after that
    the shard is reported failed in the tick's aggregate rather than stalling it.
    """
    rt = runtime()
    try:
        return evaluator().run(int(shard), float(tick_ts), shocks)
    except Exception as exc:  # reported, retried, never silent
        fresh = rt.clock.time() - float(tick_ts) < rt.settings.monitor_deadline_seconds
        log_event(log, "shard evaluation failed", logging.ERROR, shard=shard,
                  tick_ts=tick_ts, error=f"{exc.__class__.__name__}: {exc}",
                  retries=self.request.retries, exc_info=True)
        if shocks is None and fresh and self.request.retries < SHARD_RETRIES:
            raise self.retry(exc=exc, countdown=0.05)
        return {"shard": shard, "tick_ts": tick_ts, "accounts": 0, "failed": True,
                "error": f"{exc.__class__.__name__}: {exc}"[:500]}


@risk_task("risk.aggregate_tick", ignore_result=False, soft_time_limit=10, time_limit=20)
def aggregate_tick(results: list, tick_ts: float) -> dict:
    """The chord callback: ``{tick_ts, accounts, shards, duration_ms, lag_ms, violations,
    liquidations_started, failed_shards}`` and the tick counters."""
    return ticks.finish(runtime(), results, tick_ts)


def _validate_shocks(shocks: Any) -> dict[str, float]:
    if not isinstance(shocks, dict) or not shocks:
        raise ValueError("shocks must be a non-empty object {symbol: relative move}")
    if len(shocks) > 10_000:
        raise ValueError("at most 10000 symbols")
    parsed = {}
    for symbol, move in shocks.items():
        if not isinstance(symbol, str) or not symbol or len(symbol) > 32:
            raise ValueError(f"bad symbol {str(symbol)[:40]!r}")
        if isinstance(move, bool) or not isinstance(move, (int, float)) \
                or not math.isfinite(move) or not -1.0 < move <= MAX_SHOCK:
            raise ValueError(f"shocks.{symbol}: a relative move above -1 and at most {MAX_SHOCK}")
        parsed[symbol] = float(move)
    return parsed


@risk_task("risk.stress_test", ignore_result=False, soft_time_limit=90, time_limit=120)
def stress_test(shocks: Any) -> dict:
    """What if ``{symbol: relative move}`` happened now: the accounts that would breach
    maintenance, their shortfall and the total. Runs through the same shards; acts on
    nothing. Shards that do not answer in time are evaluated here instead."""
    try:
        parsed = _validate_shocks(shocks)
    except ValueError as exc:
        return {"ok": False, "error": str(exc)}
    rt = runtime()
    unknown = sorted(set(parsed) - set(rt.store.current_config().specs))
    if unknown:  # the shard evaluators index marks by configured symbol only
        return {"ok": False, "error": f"shocks.{unknown[0][:40]}: unknown symbol"}
    started = time.perf_counter()
    now = rt.clock.time()
    shards = range(rt.settings.shards)
    results: dict[int, dict] = {}
    pending = group(evaluate_shard.s(k, now, parsed) for k in shards).apply_async()
    try:
        for item in pending.get(timeout=STRESS_TIMEOUT, interval=0.005,
                                disable_sync_subtasks=False, propagate=False):
            if isinstance(item, dict) and not item.get("failed"):
                results[item["shard"]] = item
    except Exception as exc:  # noqa: BLE001 - fall back to evaluating here
        log_event(log, "stress shards did not answer, evaluating here", logging.WARNING,
                  error=str(exc))
    for k in shards:
        if k not in results:
            results[k] = evaluator().run(k, now, parsed)
    rows = sorted((row for r in results.values() for row in r["rows"]),
                  key=lambda row: -row["shortfall"])
    return {
        "ok": True, "shocks": parsed, "as_of": now,
        "accounts": sum(r["accounts"] for r in results.values()),
        "breaching": sum(r["breaching"] for r in results.values()),
        "total_shortfall": sum(r["shortfall"] for r in results.values()),
        "unpriced_accounts": sum(r["unpriced"] for r in results.values()),
        "worst": rows[:1000],
        "duration_ms": round((time.perf_counter() - started) * 1000, 3),
    }


@risk_task("risk.reset_daily")
def reset_daily() -> dict:
    """00:00 UTC: every shard resets day-start equity to equity at its next tick."""
    rt = runtime()
    pipe = rt.redis.pipeline(transaction=False)
    for shard in range(rt.settings.shards):
        # A day id that is no day: the next tick starts a new day (no day id at all
        # means a fresh state, whose ingested day-start equity stands).
        pipe.set(keys.shard_dayid(shard), "reset")
        pipe.incr(keys.shard_marks_version(shard))
    pipe.execute()
    return {"ok": True, "shards": rt.settings.shards}
