"""Every Prometheus metric of the engine, defined once. Named ``risk_<noun>_<unit>``,
few labels, never an account id.

Prefork workers run several processes, so values are kept with the client's
multiprocess mode: ``PROMETHEUS_MULTIPROC_DIR`` must be set before prometheus_client is
first imported. This module sets it (from ``RISK_METRICS_DIR``, else a fresh directory
per worker host process) and is the first importer in every worker.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

from risk_tasks.settings import get_settings

if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
    _dir = get_settings().metrics_dir
    if not _dir:
        # A directory of this process tree only: removed when the process that made it
        # exits (forked pool children leave through os._exit and never run atexit).
        _dir = tempfile.mkdtemp(prefix="risk-metrics-")
        atexit.register(lambda owner=os.getpid(), path=_dir: os.getpid() == owner
                        and shutil.rmtree(path, ignore_errors=True))
    os.makedirs(_dir, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = _dir

from prometheus_client import Counter, Gauge, Histogram  # noqa: E402
from prometheus_client import values as _values  # noqa: E402

# The ``celery`` command imports Flower's CLI plug-in, and with it prometheus_client,
# before any of our code runs, so the client chose its single-process value class
# while PROMETHEUS_MULTIPROC_DIR was still unset. Choose again now that it is set (only
# then: a second multiprocess value class would map the same files twice).
if _values.ValueClass is _values.MutexValue:
    _values.ValueClass = _values.get_value_class()

# Fine buckets below 10 ms so that a 1 ms p99 can be read off the histogram.
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.005,
                   0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
TICK_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 5.0, 10.0)

# -- PRE-TRADE --
ORDER_CHECKS = Counter("risk_order_checks_total", "Pre-trade decisions", ["result"])
ORDER_CHECK_DURATION = Histogram("risk_order_check_duration_seconds",
                                 "Time to decide one order inside the worker",
                                 buckets=LATENCY_BUCKETS)
ORDERS_REJECTED = Counter("risk_orders_rejected_total", "Rejected orders by reason", ["reason"])
ORDER_REPLAYS = Counter("risk_order_replays_total",
                        "Checks answered with an earlier decision of the same order id")

# -- MONITOR --
TICK_DURATION = Histogram("risk_monitor_tick_duration_seconds",
                          "Tick start to aggregate done", buckets=TICK_BUCKETS)
TICK_LAG = Histogram("risk_monitor_tick_lag_seconds",
                     "Scheduled tick time to aggregate done", buckets=TICK_BUCKETS)
TICKS = Counter("risk_monitor_ticks_total", "Monitor ticks by outcome", ["outcome"])
TICKS_SKIPPED = Counter("risk_monitor_ticks_skipped_total",
                        "Ticks skipped (previous still running, duplicate or too late)",
                        ["reason"])
ACTIVE_ACCOUNTS = Gauge("risk_active_accounts", "Accounts evaluated by the last tick",
                        multiprocess_mode="mostrecent")
SHARD_DURATION = Histogram("risk_shard_duration_seconds", "One shard evaluation",
                           buckets=TICK_BUCKETS)

# -- ACTIONS --
LIQUIDATIONS = Counter("risk_liquidations_total", "Liquidation episodes by status", ["status"])
VIOLATIONS = Counter("risk_violations_total", "Policy violations found by the monitor",
                     ["policy_type", "policy"])
EMERGENCY_STOP_ACTIVE = Gauge("risk_emergency_stop_active",
                              "1 while the platform is halted by an emergency stop",
                              multiprocess_mode="mostrecent")
ALERTS_PUBLISHED = Counter("risk_alerts_published_total", "Alerts delivered", ["level"])
ALERTS_DEDUPLICATED = Counter("risk_alerts_deduplicated_total",
                              "Alerts suppressed as duplicates within the window")
CIRCUIT_BREAKER_TRIPS = Counter("risk_circuit_breaker_trips_total",
                                "Accounts put in REDUCING by the circuit breaker")
PRICE_TICKS = Counter("risk_price_ticks_total",
                      "Mark prices ingested by outcome: accepted, out_of_order, held (a jump "
                      "past RISK_PRICE_JUMP_FRACTION, awaiting confirmation), confirmed",
                      ["outcome"])
DEAD_LETTERS = Counter("risk_dead_letters_total", "Tasks dead-lettered", ["task"])
AUDIT_BACKLOG = Gauge("risk_audit_backlog", "Journal records not yet in the database",
                      ["stream"], multiprocess_mode="mostrecent")

# -- HOST --
# Read from Redis by each host's /metrics endpoint at scrape time (risk_tasks/exporter.py),
# together with risk_audit_backlog and risk_emergency_stop_active, so they are current
# even when no task has run lately.
REDIS_UP = Gauge("risk_redis_up", "1 when the host's hot-state Redis answers a PING",
                 multiprocess_mode="mostrecent")


def observe_check(outcome) -> None:  # noqa: ANN001 - risk_tasks.pretrade.Outcome
    """Count one pre-trade outcome (a replay is counted as such, not as a decision)."""
    observe_checks((outcome,))


def observe_checks(outcomes) -> None:  # noqa: ANN001 - iterable of risk_tasks.pretrade.Outcome
    """Count pre-trade outcomes, each counter moved once per label for the lot (a
    multiprocess counter's increment writes a shared file: per order, it was 6 % of a
    batched order's CPU). Every decision's time still goes into the histogram."""
    replays = 0
    results: dict[str, int] = {}
    reasons: dict[str, int] = {}
    for outcome in outcomes:
        if outcome.replayed:
            replays += 1
            continue
        result = outcome.result
        if result["approved"]:
            results["approved"] = results.get("approved", 0) + 1
        else:
            results["rejected"] = results.get("rejected", 0) + 1
            reason = result["rejection_reason"]
            reasons[reason] = reasons.get(reason, 0) + 1
        ORDER_CHECK_DURATION.observe(result["processing_time_us"] / 1e6)
    if replays:
        ORDER_REPLAYS.inc(replays)
    for label, n in results.items():
        ORDER_CHECKS.labels(label).inc(n)
    for reason, n in reasons.items():
        ORDERS_REJECTED.labels(reason).inc(n)
