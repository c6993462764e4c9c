"""CPU of one liquidation episode, in process: the worker's share and Redis's.

The shock benchmark (``bench/liquidation.py``) measures the whole system, and on this
machine its runs move with the machine's speed by a third within an hour. This one
runs what a solo ``actions`` worker runs for a batch of liquidation messages (the
task's ``run_batch``: every episode, their alerts' publish; not Celery's message
handling) on the same population and shock, in one process, and counts CPU seconds:
this process's (``time.process_time``) and the Redis server's (``INFO cpu``). Groups of
32 accounts alternate between two ways, so that a change of the machine's speed falls
on both:

- ``batch_of_32``: one ``run_batch`` of the 32;
- ``batches_of_1``: 32 ``run_batch`` of one each (a worker that gets one message at a
  time).

    .venv/bin/python bench/liquidation_cpu.py [--accounts 6000] [--out FILE]

Prints JSON and a table; asserts nothing about the figures.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import emit, machine, start_services  # noqa: E402

BATCH = 32


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", type=int, default=6_000)
    parser.add_argument("--unix-socket", action="store_true")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    os.environ.setdefault("RISK_SHARDS", "8")
    os.environ.setdefault("RISK_PRICE_STALE_SECONDS", "600")
    started = start_services(unix_socket=args.unix_socket)
    try:
        from bench.liquidation import SHOCK_MARK, SHOCK_SYMBOL, expected_liquidations, populate
        from risk_tasks.runtime import runtime
        from risk_tasks.tasks.liquidation import liquidate_account

        rt = runtime()
        targets = args.accounts * 7 // 10
        world = populate(rt, args.accounts, targets, 50)
        shocked = dict(world["marks"])
        shocked[SHOCK_SYMBOL] = SHOCK_MARK * Decimal("0.91")
        expected = sorted(expected_liquidations(rt, shocked, targets))
        rt.store.ingest_prices({SHOCK_SYMBOL: shocked[SHOCK_SYMBOL]}, time.time())
        logging.disable(logging.WARNING)  # a worker's WARNING line per episode is not the subject

        def redis_cpu() -> float:
            info = rt.redis.info("cpu")
            return info["used_cpu_sys"] + info["used_cpu_user"]

        totals = {"batch_of_32": [0.0, 0.0, 0], "batches_of_1": [0.0, 0.0, 0]}
        results = []
        chunks = [expected[i:i + BATCH] for i in range(0, len(expected), BATCH)]
        for n, chunk in enumerate(chunks):
            way = "batches_of_1" if n % 2 else "batch_of_32"
            calls = [SimpleNamespace(id=f"bench-{a}", retries=0, args=[a, "bench", f"liq:{a}:1"],
                                     kwargs={}, argsrepr="") for a in chunk]
            redis_before, own_before = redis_cpu(), time.process_time()
            if way == "batch_of_32":
                outcomes = liquidate_account.run_batch(calls)
            else:
                outcomes = [o for call in calls for o in liquidate_account.run_batch([call])]
            own, redis_used = time.process_time() - own_before, redis_cpu() - redis_before
            results += [o.result for o in outcomes]
            if n >= 2:  # the first of each way warms caches and loads scripts
                totals[way][0] += own
                totals[way][1] += redis_used
                totals[way][2] += len(chunk)
        completed = sum(isinstance(r, dict) and r.get("status") == "completed" for r in results)
        rows = [{"way": way, "episodes": k, "worker_cpu_ms_per_episode": round(own / k * 1000, 3),
                 "redis_cpu_ms_per_episode": round(used / k * 1000, 3)}
                for way, (own, used, k) in totals.items()]
        emit("liquidation episode CPU, in process",
             {"benchmark": "liquidation_cpu", "machine": machine(), "accounts": args.accounts,
              "episodes": len(expected), "completed": completed,
              "redis_transport": "unix" if args.unix_socket else "tcp", "ways": rows},
             rows, ["way", "episodes", "worker_cpu_ms_per_episode", "redis_cpu_ms_per_episode"],
             args.out)
    finally:
        for server in started:
            server.cleanup()


if __name__ == "__main__":
    main()
