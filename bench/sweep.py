"""Monitor sweep: tick-to-done time and accounts per second, by population and workers.

    .venv/bin/python bench/sweep.py                                   # 10k and 100k
    .venv/bin/python bench/sweep.py --accounts 10000,100000,1000000   # about 40 minutes

For each population N (3 positions per account on average over 50 symbols), loaded
through the real ingest path (the state store's account commit, the same script and
journal records as risk.upsert_account / risk.apply_fill), and for each number of
worker processes W, it loads the population afresh (every run starts from the same
state and follows the same seeded price path), starts one monitor worker (prefork,
-c W, queues monitor and shards), warms its processes' shard caches at unchanged prices,
then runs ticks: each tick moves every price a little (a random walk, so peaks and
drawdowns really change), sends
``risk.monitor_tick`` and waits for its ``aggregate_tick``. It prints the tick time from
``monitor_tick`` start to aggregate done (``duration_ms``), accounts per second, the
slowest shard, and the resident memory of the worker processes.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (emit, group_cpu_seconds, machine, percentile,  # noqa: E402
                          redis_cpu_seconds, settle_aof, start_services,
                          warm_shard_caches)


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its children, in MB."""
    total = 0
    pids = [pid]
    try:
        children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
        pids += [int(p) for p in children.stdout.split()]
    except OSError:
        pass
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return round(total / 1024, 1)


def populate(n: int, symbols: int) -> float:
    from risk_tasks.engine.policies import DEFAULT_POLICIES
    from risk_tasks.runtime import runtime
    from risk_tasks.simulator import Market, population, symbol_names, symbol_specs

    rt = runtime()
    rt.redis.flushdb()
    market = Market(symbol_names(symbols), seed=3)
    rt.store.put_symbols(symbol_specs(market.names))
    rt.store.put_policies(DEFAULT_POLICIES)
    rt.store.ingest_prices(market.marks(), time.time())
    started = time.perf_counter()
    rt.store.create_accounts(population(n, market, seed=3, max_leverage=6.0))
    elapsed = time.perf_counter() - started
    rt.redis.delete("risk:journal")  # no drainer in this benchmark; keep Redis memory honest
    return elapsed


def run_ticks(app, rt, market, ticks: int, move: bool = True) -> list[dict]:  # noqa: ANN001
    """``ticks`` ticks, each after a step of the random walk (``move``) or at the same
    marks, freshly stamped (warm-up: every run then measures the same price path)."""
    results = []
    for _ in range(ticks):
        rt.store.ingest_prices(market.step() if move else market.marks(), time.time())
        tick_ts = time.time()
        started = time.perf_counter()
        reply = app.send_task("risk.monitor_tick", args=[tick_ts]).get(timeout=120)
        if not reply.get("callback_id"):
            raise RuntimeError(f"tick skipped: {reply}")
        summary = app.AsyncResult(reply["callback_id"]).get(timeout=300, interval=0.005)
        summary["client_ms"] = round((time.perf_counter() - started) * 1000, 1)
        results.append(summary)
        if summary["failed_shards"]:
            raise RuntimeError(f"failed shards: {summary}")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", default="10000,100000")
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--ticks", type=int, default=10)
    parser.add_argument("--symbols", type=int, default=50)
    parser.add_argument("--shards", type=int, default=int(os.environ.get("RISK_SHARDS", 8)))
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    os.environ["RISK_SHARDS"] = str(args.shards)
    os.environ.setdefault("RISK_PRICE_STALE_SECONDS", "60")
    os.environ.setdefault("RISK_MONITOR_DEADLINE_SECONDS", "600")  # measure, do not drop
    os.environ.setdefault("RISK_FEED_STALE_SECONDS", "0")
    started_services = start_services()
    rows, runs = [], []
    try:
        from risk_tasks.app import app
        from risk_tasks.monitor.cache import startup_allowance
        from risk_tasks.runtime import runtime
        from risk_tasks.simulator import Market, symbol_names

        rt = runtime()
        for n in [int(x) for x in args.accounts.split(",")]:
            for w in [int(x) for x in args.workers.split(",")]:
                # The same start for every worker count: the population, the prices and
                # their random walk, and no state left by an earlier run's ticks (peaks,
                # claimed alerts, tripped breakers), so runs compare like for like.
                load_s = populate(n, args.symbols)
                market = Market(symbol_names(args.symbols), seed=3)
                positions = sum(rt.redis.hlen(f"risk:pos:{a}") for a in
                                rt.store.shard_account_ids(0)) * args.shards
                started_at = time.perf_counter()
                worker = subprocess.Popen(
                    [sys.executable, "-m", "celery", "-A", "risk_tasks", "worker", "-P",
                     "prefork", "-c", str(w), "-Q", "monitor,shards", "-n",
                     f"bench-sweep-{w}@%h", "--without-gossip", "--without-mingle",
                     "-l", "warning"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
                try:
                    # it answers once it has read every shard (RISK_MONITOR_PRELOAD)
                    deadline = time.monotonic() + startup_allowance(n)
                    while not app.control.ping(timeout=0.5):
                        if time.monotonic() > deadline:
                            raise RuntimeError("monitor worker did not start")
                    start_s = time.perf_counter() - started_at
                    warm_started = time.perf_counter()
                    warm_shard_caches(lambda: run_ticks(app, rt, market, 1, move=False)[0], w,
                                      args.shards)
                    warm_s = time.perf_counter() - warm_started
                    settle_aof(rt.redis)  # no automatic AOF rewrite in the measured ticks
                    cpu_before = (group_cpu_seconds(worker.pid), redis_cpu_seconds(rt.redis))
                    results = run_ticks(app, rt, market, args.ticks)
                    worker_cpu = group_cpu_seconds(worker.pid) - cpu_before[0]
                    redis_cpu = redis_cpu_seconds(rt.redis) - cpu_before[1]
                    durations = sorted(r["duration_ms"] for r in results)
                    p50 = percentile(durations, 0.5)
                    run = {
                        "accounts": n, "positions_estimate": positions, "workers": w,
                        "shards": args.shards, "ticks": len(results),
                        "tick_ms_p50": p50, "tick_ms_max": durations[-1],
                        "accounts_per_second": round(n / (p50 / 1000)),
                        "slowest_shard_ms_p50": percentile(
                            sorted(r["shard_ms_max"] for r in results), 0.5),
                        "violations_last_tick": sum(results[-1]["violations"].values()),
                        "cache_loads": sum(r["cache_loads"] for r in results),
                        "shard_overlap_p50": percentile(
                            sorted(r.get("shard_overlap") or 0 for r in results), 0.5),
                        "slowest_shard_phases_ms": results[len(results) // 2][
                            "slowest_shard_phases_ms"],
                        "worker_rss_mb": rss_mb(worker.pid),
                        # CPU per tick over the measured ticks (they include the price
                        # ingest and the tick's own sends): all the worker's processes,
                        # and the Redis server (single-threaded, shared by all)
                        "worker_cpu_ms_per_tick": round(worker_cpu * 1000 / len(results), 1),
                        "redis_cpu_ms_per_tick": round(redis_cpu * 1000 / len(results), 1),
                        # from the worker's start to its first answer: the shard
                        # preload (RISK_MONITOR_PRELOAD) is most of it
                        "worker_start_s": round(start_s, 1),
                        "warmup_s": round(warm_s, 1), "load_s": round(load_s, 1),
                    }
                    runs.append(run)
                    rows.append(run)
                    print(f"  N={n} W={w}: p50 {p50} ms", file=sys.stderr)
                finally:
                    worker.terminate()
                    worker.wait(timeout=60)
        speedups = {}
        for n in {r["accounts"] for r in runs}:
            by_w = {r["workers"]: r["tick_ms_p50"] for r in runs if r["accounts"] == n}
            if 1 in by_w and 2 in by_w:
                speedups[str(n)] = round(by_w[1] / by_w[2], 2)
        emit("monitor sweep", {"benchmark": "sweep", "machine": machine(), "runs": runs,
                               "speedup_1_to_2_workers": speedups}, rows,
             ["accounts", "workers", "shards", "tick_ms_p50", "tick_ms_max",
              "accounts_per_second", "slowest_shard_ms_p50", "worker_rss_mb", "worker_start_s"],
             args.out)
    finally:
        for server in started_services:
            server.cleanup()


if __name__ == "__main__":
    main()
