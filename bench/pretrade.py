"""Pre-trade round trip as a calling service sees it, through the real broker.

    .venv/bin/python bench/pretrade.py                # everything, about 3 minutes
    .venv/bin/python bench/pretrade.py --quick        # shorter runs

Starts a throw-away Redis (unless RISK_REDIS_URL is set), loads symbols and a population
of accounts, starts one pretrade worker (``--workers N``: N of them) with the role's
production command line (``riskctl worker pretrade``: solo pool, ack emulation off), and
measures from separate client processes:

1. the floor: a bare Redis request/reply (LPUSH + BLPOP) round trip on the same server;
2. the Celery no-op (``risk.ping``) on the same worker, one caller and 8 callers; and the
   reference the targets were set against, plain Celery's no-op tuned as in
   ``shared/notes/celery-baseline.md`` (``bench/plain_celery.py``, its own worker), the
   same two ways, so the engine reads against what Celery costs here at that moment;
3. ``risk.check_order`` at steady offered loads (open loop: latency counts from the
   scheduled send time, so queueing is not hidden), then at saturation (closed loop);
4. ``risk.check_order_batch``: orders decided per second at saturation, and each
   order's decision latency at 5,000 orders/s offered;
5. the coalescing client (``RiskClient(coalesce=True)``) at 5,000 orders/s offered and
   at saturation.

Prints JSON and a table. Figures are measured, never asserted.
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing as mp
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    ROOT, emit, group_cpu_seconds, latency_summary, machine, redis_cpu_seconds, start_services,
)
from risk_tasks.settings import client_url  # noqa: E402


# -- CLIENT PROCESSES (spawned) --

def _orders(ids: list[str], marks: dict[str, float], seed: int):
    rng = random.Random(seed)
    symbols = list(marks)
    n = 0
    prefix = f"b{seed}-{time.time_ns()}"
    while True:
        n += 1
        symbol = rng.choice(symbols)
        yield {"order_id": f"{prefix}-{n}", "account_id": rng.choice(ids), "symbol": symbol,
               "side": "BUY" if rng.random() < 0.5 else "SELL",
               "quantity": max(round(rng.uniform(200, 5000) / marks[symbol], 4), 0.0001),
               "order_type": "MARKET"}


def client_main(mode: str, params: dict, out: mp.Queue, ready) -> None:  # noqa: ANN001
    """One client process: ``threads`` callers, open or closed loop, for ``duration`` s."""
    os.environ.update(params["env"])
    from risk_tasks.app import app
    from risk_tasks.client import RiskClient

    coalesce = mode == "coalesce"
    client = RiskClient(app, timeout=params.get("timeout", 2.0), coalesce=coalesce,
                        window=params.get("window", 0.0005), max_batch=params.get("max_batch", 200),
                        direct=params.get("direct", True),
                        **({"max_in_flight": params["max_in_flight"]}
                           if params.get("max_in_flight") else {}))
    gen = _orders(params["ids"], params["marks"], params["seed"])
    lock = threading.Lock()

    def next_order() -> dict:
        with lock:
            return next(gen)

    check = client.check_order
    if mode in ("noop", "plain"):
        if mode == "noop":  # the engine's no-op, risk.ping, on the same worker
            def round_trip() -> None:
                app.send_task("risk.ping", argsrepr="", kwargsrepr="").get(
                    timeout=2, interval=0.001)
        else:  # plain Celery's no-op on its own worker (bench/plain_celery.py)
            from bench.plain_celery import call as round_trip

        def check(order: dict) -> dict:
            try:
                round_trip()
            except Exception:  # noqa: BLE001 - counted as the checks' time-outs are
                return {"client_side": True}
            return order

    # warm up, then keep the collector out of the measurement
    for _ in range(50):
        check(next_order())
    gc.collect()
    gc.freeze()
    latencies: list[float] = []
    failed = [0]
    decided = [0]
    # Every process measures the same window: all start when the last one has started
    # up and warmed up, for ``duration`` seconds.
    ready.wait(timeout=120)
    stop_at = time.perf_counter() + params["duration"]
    threads = params["threads"]
    batch = params.get("batch", 0)
    rate = params.get("rate")  # per process; None: closed loop

    def caller(index: int) -> None:
        interval = threads / rate if rate else 0.0
        if batch:
            interval *= batch
        next_at = time.perf_counter() + (index * interval / threads if rate else 0)
        local: list[float] = []
        while True:
            now = time.perf_counter()
            if now >= stop_at:
                break
            if rate:
                if next_at > now:
                    time.sleep(next_at - now)
                started = next_at
                next_at += interval
            else:
                started = time.perf_counter()
            if batch:
                results = client.check_orders([next_order() for _ in range(batch)])
            else:
                results = [check(next_order())]
            done = time.perf_counter()
            bad = sum(1 for r in results if r.get("client_side"))
            with lock:
                failed[0] += bad
                decided[0] += len(results) - bad
            local.extend([done - started] * len(results))
        with lock:
            latencies.extend(local)

    workers = [threading.Thread(target=caller, args=(i,)) for i in range(threads)]
    cpu_before = time.process_time()
    begun = time.perf_counter()
    began_wall = time.time()
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    elapsed = time.perf_counter() - begun
    ended_wall = time.time()
    cpu = time.process_time() - cpu_before  # every thread of this process, the client's too
    client.close()
    out.put({"latencies": latencies, "failed": failed[0], "decided": decided[0],
             "elapsed": elapsed, "began": began_wall, "ended": ended_wall, "cpu": cpu})


def run_clients(mode: str, processes: int, params: dict) -> dict:
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    ready = ctx.Barrier(processes)
    procs = []
    for i in range(processes):
        p = dict(params, seed=params["seed"] + i)
        procs.append(ctx.Process(target=client_main, args=(mode, p, out, ready)))
    for p in procs:
        p.start()
    results = [out.get(timeout=params["duration"] + 120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    latencies = [x for r in results for x in r["latencies"]]
    # decisions over the window from the first process's start to the last one's end
    elapsed = max(r["ended"] for r in results) - min(r["began"] for r in results)
    decided = sum(r["decided"] for r in results)
    cpu = sum(r["cpu"] for r in results)
    return {"decided": decided, "failed_closed": sum(r["failed"] for r in results),
            "per_second": round(decided / elapsed, 1), **latency_summary(latencies),
            "caller_cpu_us": round(cpu / max(decided, 1) * 1e6, 1)}


def with_cpu(worker_pids: list[int], redis_client, run) -> dict:  # noqa: ANN001
    """``run()``'s figures plus the CPU the pretrade workers and Redis spent on it, per
    decision (the callers' own, ``caller_cpu_us``, each client process measures itself)."""
    workers_before = sum(group_cpu_seconds(pid) for pid in worker_pids)
    redis_before = redis_cpu_seconds(redis_client)
    step = run()
    decided = max(step["decided"], 1)
    step["worker_cpu_us"] = round(
        (sum(group_cpu_seconds(pid) for pid in worker_pids) - workers_before) / decided * 1e6, 1)
    step["redis_cpu_us"] = round((redis_cpu_seconds(redis_client) - redis_before) / decided * 1e6, 1)
    return step


# -- FLOOR AND NO-OP --

RESPONDER = """
import redis, sys
r = redis.Redis.from_url(sys.argv[1])
while True:
    _, msg = r.blpop("bench:req")
    if msg == b"stop":
        break
    r.lpush("bench:rep", msg)
"""


def spare_db(url: str, db: int) -> str:
    """``url`` (TCP or Unix-socket form) on database ``db`` instead of its own."""
    if url.startswith("redis+socket://"):
        return url.split("?", 1)[0] + f"?virtual_host={db}"
    return url.rsplit("/", 1)[0] + f"/{db}"


def redis_floor(url: str, n: int) -> dict:
    import redis

    proc = subprocess.Popen([sys.executable, "-c", RESPONDER, url])
    r = redis.Redis.from_url(url)
    r.delete("bench:req", "bench:rep")
    latencies = []
    for i in range(n + 200):
        started = time.perf_counter()
        r.lpush("bench:req", b"x")
        r.blpop("bench:rep")
        if i >= 200:
            latencies.append(time.perf_counter() - started)
    r.lpush("bench:req", b"stop")
    proc.wait(timeout=10)
    return latency_summary(latencies)


def sequential(call, n: int) -> dict:  # noqa: ANN001
    """``n`` round trips of ``call`` one after the other, after 200 of warm-up."""
    latencies = []
    for i in range(n + 200):
        started = time.perf_counter()
        call()
        if i >= 200:
            latencies.append(time.perf_counter() - started)
    return latency_summary(latencies)


def celery_noop(n: int) -> dict:
    from risk_tasks.app import app

    return sequential(lambda: app.send_task("risk.ping", argsrepr="", kwargsrepr="").get(
        timeout=5, interval=0.001), n)


def plain_celery_reference(n: int, base: dict) -> dict:
    """Plain Celery's no-op, tuned as in the notes, on its own solo worker and the same
    Redis (databases 3 and 4): one caller, then 8 callers (2 processes of 4 threads, as
    the engine's saturation step)."""
    from bench import plain_celery

    env = {k: v for k, v in os.environ.items() if k.startswith("PLAIN_")}
    worker = subprocess.Popen(plain_celery.worker_command(), cwd=ROOT, env=os.environ,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not plain_celery.app.control.ping(timeout=0.5):
            if time.monotonic() > deadline:
                raise RuntimeError("the plain Celery worker did not start")
        one = sequential(plain_celery.call, n)
        many = run_clients("plain", 2, dict(base, env=dict(base["env"], **env), threads=4))
    finally:
        worker.terminate()
        worker.wait(timeout=20)
    return {"sequential": one, "saturation": many}


# -- SET-UP --

def populate(n_accounts: int, n_symbols: int) -> tuple[list[str], dict[str, float]]:
    from risk_tasks.engine.policies import DEFAULT_POLICIES
    from risk_tasks.runtime import runtime
    from risk_tasks.simulator import Market, population, symbol_names, symbol_specs

    rt = runtime()
    rt.redis.flushdb()
    market = Market(symbol_names(n_symbols), seed=5)
    rt.store.put_symbols(symbol_specs(market.names))
    rt.store.put_policies(DEFAULT_POLICIES)
    rt.store.ingest_prices(market.marks(), time.time())
    rt.store.create_accounts(population(n_accounts, market, seed=5))
    return list(rt.store.iter_account_ids()), {k: float(v) for k, v in market.marks().items()}


def refresh_prices(stop: threading.Event) -> None:
    """Re-stamp the marks every second, as a live feed would."""
    from risk_tasks.runtime import runtime

    store = runtime().store
    marks = {k: v.price for k, v in store.marks().items()}
    while not stop.wait(1.0):
        store.ingest_prices(marks, time.time())
        store.redis.xtrim("risk:audit", maxlen=10_000, approximate=True)  # no drainer here


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--symbols", type=int, default=50)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per load step")
    parser.add_argument("--rates", default="100,200,500", help="offered single-check loads")
    parser.add_argument("--quick", action="store_true", help="3 s steps, fewer samples")
    parser.add_argument("--unix-socket", action="store_true",
                        help="every process reaches Redis over its Unix socket, not TCP")
    parser.add_argument("--workers", type=int, default=1,
                        help="pretrade worker processes (each one solo process, as the role "
                             "runs them; scaling adds processes)")
    parser.add_argument("--max-in-flight", type=int, default=None,
                        help="batches one coalescing client keeps outstanding (default: "
                             "RiskClient's)")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args()
    if args.quick:
        args.duration = 3.0
    started = start_services(unix_socket=args.unix_socket)
    os.environ.setdefault("RISK_RATE_LIMIT_PER_SECOND", "1000000")  # measure the path, not the limit
    os.environ.setdefault("RISK_PRICE_STALE_SECONDS", "30")
    workers: list[subprocess.Popen] = []
    stop = threading.Event()
    try:
        from risk_tasks.app import app
        from risk_tasks.roles import ROLES, worker_command
        from risk_tasks.runtime import runtime

        ids, marks = populate(args.accounts, args.symbols)
        refresher = threading.Thread(target=refresh_prices, args=(stop,), daemon=True)
        refresher.start()
        log = open(Path(__file__).resolve().parent.parent / "var" / "bench-pretrade-worker.log", "ab") \
            if (Path(__file__).resolve().parent.parent / "var").is_dir() else subprocess.DEVNULL
        workers = [subprocess.Popen(
            worker_command("pretrade", name="bench-pretrade" if i == 0 else f"bench-pretrade{i + 1}"),
            env=dict(os.environ, **ROLES["pretrade"].env), stdout=log, stderr=log,
            start_new_session=True)
            for i in range(args.workers)]
        deadline = time.monotonic() + 30
        while len(app.control.ping(timeout=0.5)) < args.workers:
            if time.monotonic() > deadline:
                raise RuntimeError("pretrade workers did not start")
        env = {k: v for k, v in os.environ.items() if k.startswith("RISK_")}
        base = {"env": env, "ids": ids, "marks": marks, "seed": 1, "duration": args.duration,
                "max_in_flight": args.max_in_flight}
        n_seq = 1000 if args.quick else 3000
        result: dict = {"benchmark": "pretrade", "machine": machine(),
                        "accounts": args.accounts, "symbols": args.symbols,
                        "pretrade_workers": args.workers,
                        "coalescing_max_in_flight": args.max_in_flight,
                        "redis_transport": "unix" if args.unix_socket else "tcp"}
        result["floor_redis_request_reply"] = redis_floor(
            client_url(os.environ["RISK_BROKER_URL"]), n_seq)
        result["celery_noop_sequential"] = celery_noop(n_seq)
        result["celery_noop_saturation"] = run_clients("noop", 2, dict(base, threads=4))
        os.environ.update(PLAIN_BROKER_URL=spare_db(os.environ["RISK_BROKER_URL"], 3),
                          PLAIN_RESULT_BACKEND=spare_db(os.environ["RISK_BROKER_URL"], 4))
        result["plain_celery_noop"] = plain_celery_reference(n_seq, base)
        pids = [w.pid for w in workers]
        store_client = runtime().redis

        def engine(mode: str, processes: int, params: dict) -> dict:
            return with_cpu(pids, store_client,
                            lambda: run_clients(mode, processes, params))

        result["check_order_sequential"] = engine("single", 1, dict(base, threads=1))
        steady = {}
        for rate in [float(r) for r in args.rates.split(",")]:
            procs = 1 if rate <= 200 else 2
            steady[str(int(rate))] = engine(
                "single", procs, dict(base, rate=rate / procs, threads=4))
        result["check_order_offered"] = steady
        result["check_order_saturation"] = engine("single", 2, dict(base, threads=4))
        result["batch_saturation"] = engine("single", 2, dict(base, threads=2, batch=100))
        result["batch_offered_5000"] = engine(
            "single", 2, dict(base, threads=2, batch=50, rate=2500.0))
        result["coalesce_offered_5000"] = engine(
            "coalesce", 2, dict(base, threads=64, rate=2500.0, window=0.0005))
        result["coalesce_saturation"] = engine(
            "coalesce", 2, dict(base, threads=64, window=0.0005))
        rows = [
            {"path": "bare Redis request/reply (floor)", **result["floor_redis_request_reply"]},
            {"path": "plain Celery no-op (notes' tuning), 1 caller",
             **result["plain_celery_noop"]["sequential"]},
            {"path": "plain Celery no-op, saturation (8 callers)",
             **result["plain_celery_noop"]["saturation"]},
            {"path": "celery no-op, 1 caller", **result["celery_noop_sequential"]},
            {"path": "celery no-op, saturation (8 callers)", **result["celery_noop_saturation"]},
            {"path": "check_order, 1 caller", **result["check_order_sequential"]},
            *[{"path": f"check_order at {r}/s offered", **v} for r, v in steady.items()],
            {"path": "check_order saturation (8 callers)", **result["check_order_saturation"]},
            {"path": "batch of 100, saturation", **result["batch_saturation"]},
            {"path": "batch of 50 at 5000 orders/s", **result["batch_offered_5000"]},
            {"path": "coalescing client at 5000/s", **result["coalesce_offered_5000"]},
            {"path": "coalescing client saturation", **result["coalesce_saturation"]},
        ]
        emit("pre-trade round trip (ms; per_second = decisions/s)", result, rows,
             ["path", "per_second", "p50_ms", "p99_ms", "p999_ms", "failed_closed", "samples",
              "worker_cpu_us", "redis_cpu_us", "caller_cpu_us"],
             args.out)
    finally:
        stop.set()
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(timeout=20)
        for server in started:
            server.cleanup()


if __name__ == "__main__":
    main()
