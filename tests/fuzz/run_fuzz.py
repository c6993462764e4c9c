"""Fuzz every task's arguments, every ``riskctl load`` line and every price tick with
100,000 hostile cases (tests/fuzz/cases.py), then check the hot state's invariants.

    python -m tests.fuzz.run_fuzz                 # 100,000 cases, about 10-15 minutes
    python -m tests.fuzz.run_fuzz --cases 20000 --json

It starts a throw-away redis-server and PostgreSQL cluster of its own (as the tests do),
calls the task functions in this process after a JSON round trip (exactly what a worker
receives), and prints the verdicts per target: accepted, refused (naming the field) or
BAD (an exception, a malformed answer, a refusal naming nothing). Exit status 1 when
anything was BAD or an invariant broke.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter

import orjson


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=100_000)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--seed", type=int, default=None)
    opts = parser.parse_args()

    from tests.support.services import PostgresServer, RedisServer

    redis_server, pg = RedisServer().start(), PostgresServer().start()
    os.environ.update({
        "RISK_BROKER_URL": redis_server.url(0), "RISK_RESULT_BACKEND": redis_server.url(1),
        "RISK_REDIS_URL": redis_server.url(2), "RISK_DATABASE_URL": pg.url,
        "RISK_OPERATORS": "alice,ops", "RISK_SHARDS": "4", "RISK_PRICE_STALE_SECONDS": "30",
        "RISK_LOG_JSON": "1",
    })
    try:
        return run(opts)
    finally:
        redis_server.cleanup()
        pg.cleanup()


def run(opts: argparse.Namespace) -> int:
    import logging

    from hypothesis import HealthCheck, given, seed, settings

    import models
    from risk_tasks.runtime import runtime
    from tests.fuzz.cases import TASK_CASES, load_line_cases
    from tests.fuzz.judge import arrange_world, record, run_in_process
    from tests.integration.helpers import World
    from tests.support.invariants import fill_sums, violations

    logging.disable(logging.WARNING)  # refusals are logged at WARNING: 100,000 of them
    models.migrate(os.environ["RISK_DATABASE_URL"])
    rt = runtime()
    world = World(rt, None)
    fills = arrange_world(world)

    targets = {**TASK_CASES, "load": load_line_cases()}
    per_target = max(1, opts.cases // len(targets))
    verdicts: dict[str, Counter] = {name: Counter() for name in targets}
    findings: list[str] = []
    started = time.monotonic()
    def make(name: str, strategy):  # noqa: ANN001, ANN202 - one hypothesis test per target
        @settings(max_examples=per_target, database=None, deadline=None,
                  suppress_health_check=list(HealthCheck))
        @given(strategy)
        def one(case) -> None:  # noqa: ANN001
            try:
                result = run_in_process(case, rt)
            except Exception as exc:  # noqa: BLE001 - the finding
                verdicts[name]["BAD"] += 1
                findings.append(f"{case.describe()} raised {exc!r:.300}")
                return
            record(case, result, verdicts[name], findings, fills)

        return one

    for target, strategy in targets.items():
        one = make(target, strategy)
        if opts.seed is not None:
            one = seed(opts.seed)(one)
        one()
        print(f"{target:30s} {dict(verdicts[target])}", file=sys.stderr, flush=True)
    broken = violations(rt.redis, rt.settings.shards) + fill_sums(rt.redis, fills)
    total = sum(sum(c.values()) for c in verdicts.values())
    report = {
        "cases": total,
        "seconds": round(time.monotonic() - started, 1),
        "per_target": {name: dict(c) for name, c in verdicts.items()},
        "bad": sum(c["BAD"] for c in verdicts.values()),
        "findings": findings[:50],
        "invariant_violations": broken[:50],
        "accounts": sum(1 for _ in rt.redis.scan_iter(match="risk:acct:*")) - 1,
        "platform_state": rt.store.platform_state()["state"],
    }
    if opts.json:
        print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
    else:
        print(f"\n{total} cases in {report['seconds']} s")
        print(f"{'target':30s} {'accepted':>9s} {'refused':>9s} {'BAD':>5s}")
        for name, c in verdicts.items():
            print(f"{name:30s} {c['accepted']:9d} {c['refused']:9d} {c['BAD']:5d}")
        print(f"invariant violations: {len(broken)}; platform {report['platform_state']}")
        for line in findings[:20] + broken[:20]:
            print("  ", line)
    return 1 if report["bad"] or broken else 0


if __name__ == "__main__":
    sys.exit(main())
