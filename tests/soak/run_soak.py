"""Soak: the long versions of the fault tests, one after another, under a steady
pre-trade load, with the records counted before and after.

    python -m tests.soak.run_soak                       # about 4-5 minutes
    python -m tests.soak.run_soak --pg-outage 60 --kills 5 --redis-restarts 3 --json

A whole engine of its own (``tests/reliability/stack.py``: its own redis-server with
append-only persistence and its own PostgreSQL cluster; two pretrade workers, an ops
worker, a monitor worker and beat) takes checks from caller threads while it goes
through: PostgreSQL stopped for ``--pg-outage`` seconds; ``--kills`` SIGKILLs of a
pretrade worker (a new one started each time); ``--redis-restarts`` Redis restarts; a
SIGKILL of the monitor worker in the middle of the sweeps. Then the load stops, the
journal is drained, and every decision a caller received is looked up in PostgreSQL.
Exit status 1 if a decision is missing or doubled, or a caller waited past its timeout.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import Counter
from decimal import Decimal

import orjson


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pg-outage", type=float, default=60.0, help="seconds")
    parser.add_argument("--kills", type=int, default=5, help="pretrade worker SIGKILLs")
    parser.add_argument("--redis-restarts", type=int, default=3)
    parser.add_argument("--threads", type=int, default=4, help="caller threads")
    parser.add_argument("--timeout", type=float, default=1.0, help="caller timeout, s")
    parser.add_argument("--json", action="store_true")
    opts = parser.parse_args()
    os.environ.setdefault("RISK_TEST_LOG_DIR", tempfile.mkdtemp(prefix="risk-soak-logs-"))
    os.environ.update({"RISK_OPERATORS": "alice", "RISK_SHARDS": "4", "RISK_LOG_JSON": "1",
                       "RISK_METRICS_PORT": "0"})
    from tests.reliability.stack import Stack

    stack = Stack(private_postgres=True, env_extra={"RISK_PRICE_STALE_SECONDS": "3600"})
    try:
        stack.start()
        report = soak(stack, opts)
    finally:
        stack.close()
    report["logs"] = os.environ["RISK_TEST_LOG_DIR"]
    if opts.json:
        print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
    else:
        for key, value in report.items():
            print(f"{key:32s} {value}")
    return 0 if report["ok"] else 1


def soak(stack, opts: argparse.Namespace) -> dict:  # noqa: ANN001
    from risk_tasks.client import RiskClient
    from risk_tasks.engine.model import SymbolSpec
    from risk_tasks.engine.validation import validate_account
    from tests.reliability.load import Load, latency_summary

    store = stack.rt.store
    store.put_symbols([SymbolSpec("BTC", Decimal("0.10"), Decimal("0.05"))])
    store.ingest_prices({"BTC": Decimal(100)}, time.time())
    accounts = [f"S{i}" for i in range(40)]
    for account_id in accounts:
        store.upsert_account(validate_account({"account_id": account_id,
                                               "balance": "1000000000"}))
    pretrade = [stack.pretrade_worker(), stack.pretrade_worker()]
    stack.ops_worker()
    monitor = stack.monitor_worker(concurrency=1)
    stack.beat()
    faults: Counter = Counter()
    backlog_peak = 0
    log = []

    def note(event: str) -> None:
        log.append(f"{time.strftime('%H:%M:%S')} {event}")
        print(log[-1], file=sys.stderr, flush=True)

    with RiskClient(app=stack.app, timeout=opts.timeout) as client:
        load = Load(client, accounts, prefix="soak", threads=opts.threads).start()
        started = time.time()
        try:
            time.sleep(5)
            # -- POSTGRESQL OUTAGE --
            note(f"postgres stopped for {opts.pg_outage:.0f} s")
            stack.stop_postgres()
            outage_end = time.time() + opts.pg_outage
            while time.time() < outage_end:
                time.sleep(1)
                backlog_peak = max(backlog_peak, sum(stack.backlog().values()))
            stack.start_postgres()
            faults["postgres outage"] += 1
            note(f"postgres back; backlog peak {backlog_peak}")
            # -- PRETRADE WORKERS KILLED --
            for n in range(opts.kills):
                victim = pretrade[n % len(pretrade)]
                victim.kill()
                faults["pretrade SIGKILL"] += 1
                note(f"pretrade worker {victim.name} SIGKILLed")
                time.sleep(3)
                pretrade[n % len(pretrade)] = stack.pretrade_worker()
                time.sleep(3)
            # -- MONITOR WORKER KILLED MID-SWEEP --
            monitor.kill()
            faults["monitor SIGKILL"] += 1
            note("monitor worker SIGKILLed")
            time.sleep(2)
            monitor = stack.monitor_worker(concurrency=1)
            # -- REDIS RESTARTS --
            for _ in range(opts.redis_restarts):
                stack.restart_redis(down_seconds=1.0)
                faults["redis restart"] += 1
                note("redis restarted")
                time.sleep(10)
            time.sleep(5)
        finally:
            calls = load.stop()
    note("load stopped; draining")
    stack.drain(timeout=300)
    decided = {c.order_id for c in calls if c.decided}
    rows = Counter(stack.order_check_ids())
    timed_out = {c.order_id for c in calls if c.client_side}
    missing = decided - set(rows)
    doubled = [o for o, n in rows.items() if n > 1]
    unexpected = set(rows) - decided - timed_out
    hung = [c for c in calls if c.took > opts.timeout + 2.0]
    counters = {k.decode(): int(v) for k, v in stack.rt.redis.hgetall("risk:monitor:counters").items()}
    last = {k.decode(): v.decode() for k, v in stack.rt.redis.hgetall("risk:monitor:last").items()}
    return {
        "ok": not missing and not doubled and not unexpected and not hung,
        "seconds": round(time.time() - started, 1),
        "faults_injected": dict(faults),
        "calls": len(calls),
        "decided": len(decided),
        "failed_closed": len(timed_out),
        "callers_hung": len(hung),
        "slowest_call_ms": round(max(c.took for c in calls) * 1000, 1),
        "latency_decided": latency_summary(calls),
        "audit_rows": sum(rows.values()),
        "decisions_missing_in_postgres": len(missing),
        "audit_rows_doubled": len(doubled),
        "audit_rows_unexplained": len(unexpected),
        "audit_backlog_peak": backlog_peak,
        "monitor_counters": counters,
        "last_tick_accounts": last.get("accounts"),
        "events": log,
    }


if __name__ == "__main__":
    sys.exit(main())
