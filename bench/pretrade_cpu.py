"""CPU of one pre-trade decision, in process, step by step.

``bench/pretrade.py`` measures the whole system through the broker; this one runs the
steps of ``PretradeService`` on the benchmark's population in one process and counts
this process's CPU (``time.process_time``, the best of five passes over the same
orders) and, for whole batches, the Redis server's (``INFO cpu``):

- ``validate``: ``validate_order``;
- ``decode``: the read script's reply to the engine's ``CheckContext``;
- ``approve_quickly`` and ``decide``: the one-pass approval and the full decision with
  its result dict, on the same contexts;
- ``replay_or_decide``: what the service does between its read and its commit;
- ``check_batch``: whole batches of 100 (validation, both scripts, decisions), with
  Redis's CPU per order beside the process's;
- ``check_then_store`` and ``check_storing_in_commit``: single checks and their task's
  result, stored by a write of its own (``store_plain_success``) or by the commit
  script (``SuccessTarget``), with Redis's CPU per order; ``batch_of_N_...``: the same
  for batches of ``--stored-batch`` (20: about what the coalescing client sends at a
  few thousand orders/s).

    .venv/bin/python bench/pretrade_cpu.py [--accounts 10000] [--orders 2000]
        [--stored-batch 20] [--unix-socket] [--out FILE]

Prints JSON and a table; asserts nothing about the figures.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from itertools import count
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import emit, machine, redis_cpu_seconds, start_services  # noqa: E402


def per_order_us(run, n: int, passes: int = 5) -> float:  # noqa: ANN001
    """The least CPU per order over ``passes`` runs of ``run()`` (``n`` orders each)."""
    best = float("inf")
    for _ in range(passes):
        started = time.process_time()
        run()
        best = min(best, time.process_time() - started)
    return round(best / n * 1e6, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--orders", type=int, default=2_000)
    parser.add_argument("--stored-batch", type=int, default=20,
                        help="batch size of the batch_of_N_... steps")
    parser.add_argument("--unix-socket", action="store_true",
                        help="reach Redis over its Unix socket, not TCP")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    started = start_services(unix_socket=args.unix_socket)
    os.environ.setdefault("RISK_RATE_LIMIT_PER_SECOND", "1000000")  # measure the path
    os.environ.setdefault("RISK_PRICE_STALE_SECONDS", "600")
    try:
        from bench.pretrade import _orders, populate
        from risk_tasks.engine.pretrade import approve_quickly, decide
        from risk_tasks.engine.validation import validate_order
        from risk_tasks.app import app
        from risk_tasks.runtime import runtime

        ids, marks = populate(args.accounts, 50)
        rt = runtime()
        svc = rt.pretrade
        n = args.orders
        gen = _orders(ids, marks, 1)
        raws = [next(gen) for _ in range(n)]
        orders = [validate_order(r) for r in raws]
        replies = svc._call_many(svc.store.check_read_many, [svc._read(o) for o in orders])
        now = svc.store.clock.time()

        def context(order, reply):  # noqa: ANN001, ANN202
            return svc._context(order, reply, now)[0]

        contexts = [context(o, r) for o, r in zip(orders, replies)]
        answered = sum(approve_quickly(o, c) is not None for o, c in zip(orders, contexts))
        t0 = time.perf_counter_ns()
        steps = {
            "validate": per_order_us(lambda: [validate_order(r) for r in raws], n),
            "decode": per_order_us(
                lambda: [context(o, r) for o, r in zip(orders, replies)], n),
            "approve_quickly": per_order_us(
                lambda: [approve_quickly(o, c) for o, c in zip(orders, contexts)], n),
            "decide": per_order_us(
                lambda: [decide(o, c).to_dict(o.order_id, o.account_id, 0)
                         for o, c in zip(orders, contexts)], n),
            "replay_or_decide": per_order_us(
                lambda: [svc._replay_or_decide(o, r, rep, t0, now)
                         for o, r, rep in zip(orders, raws, replies)], n),
        }
        # whole batches of 100, new orders each pass (a repeated id would be a replay)
        batches = [[next(gen) for _ in range(100)] for _ in range(5 * (n // 100))]
        chunks = iter([batches[i::5] for i in range(5)])
        redis = rt.redis
        redis_before = redis_cpu_seconds(redis)
        steps["check_batch"] = per_order_us(
            lambda: [svc.check_batch(b) for b in next(chunks)], 100 * (n // 100))
        redis_per_order = round(
            (redis_cpu_seconds(redis) - redis_before) / (len(batches) * 100) * 1e6, 1)
        # single checks and their task's result, new orders each pass
        backend = app.backend
        singles_n = max(n // 4, 1)
        redis_single = {}

        def stored(name: str, size: int, check) -> None:  # noqa: ANN001
            """``check`` of lists of ``size`` new orders: CPU per order, this process's
            and Redis's."""
            calls = max(singles_n // size, 1)
            passes = iter([[[next(gen) for _ in range(size)] for _ in range(calls)]
                           for _ in range(5)])
            before = redis_cpu_seconds(redis)
            steps[name] = per_order_us(lambda: [check(o) for o in next(passes)], calls * size)
            redis_single[name] = round(
                (redis_cpu_seconds(redis) - before) / (5 * calls * size) * 1e6, 1)

        ids_ = count()

        def task_id() -> str:
            return f"bench-cpu-{next(ids_)}"

        stored("check_then_store", 1,
               lambda o: backend.store_plain_success(task_id(), svc.check(o[0]).result))
        stored("check_storing_in_commit", 1,
               lambda o: svc.check(o[0], backend.success_target(task_id())))
        size = args.stored_batch
        stored(f"batch_of_{size}_then_store", size,
               lambda o: backend.store_plain_success(
                   task_id(), [x.result for x in svc.check_batch(o)]))
        stored(f"batch_of_{size}_storing_in_commit", size,
               lambda o: svc.check_batch(o, backend.success_target(task_id())))
        result = {"benchmark": "pretrade_cpu", "machine": machine(), "accounts": args.accounts,
                  "redis_transport": "unix" if args.unix_socket else "tcp",
                  "orders": n, "answered_in_one_pass": answered, "cpu_us_per_order": steps,
                  "redis_cpu_us_per_batched_order": redis_per_order,
                  "redis_cpu_us_per_single_check": redis_single}
        rows = [{"step": k, "cpu_us_per_order": v} for k, v in steps.items()]
        rows.append({"step": "check_batch: Redis", "cpu_us_per_order": redis_per_order})
        rows += [{"step": f"{k}: Redis", "cpu_us_per_order": v} for k, v in redis_single.items()]
        emit("pre-trade CPU per order, in process", result, rows,
             ["step", "cpu_us_per_order"], args.out)
    finally:
        for server in started:
            server.cleanup()


if __name__ == "__main__":
    main()
