"""The caller's side of a check: ``RiskClient`` publishing through kombu's producer
against pushing its messages directly (``DirectSender``), interleaved.

    .venv/bin/python bench/client_publish.py --rounds 4 --out var/bench/client-publish.json

One pretrade worker (the role's command line) and one Redis serve both kinds of client
for the whole run, so the worker's side is the same for both; each round runs every
step with each kind of client, in alternating order. Per step: decisions/s, latency
percentiles, and the CPU per decision of the callers (their processes), the worker and
Redis. About 30 s per round with the default 5 s steps. Before the worker starts, the
caller's CPU per publish alone is measured each way (``publish_only_cpu_us``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import emit, machine, start_services  # noqa: E402
from bench.pretrade import populate, refresh_prices, run_clients, with_cpu  # noqa: E402

STEPS = {  # name: (client processes, parameters)
    "1 caller": (1, {"threads": 1}),
    "200/s offered": (1, {"threads": 4, "rate": 200.0}),
    "saturation, 8 callers": (2, {"threads": 4}),
}


def publish_cpu(app, n: int, rounds: int = 3) -> dict[str, list[float]]:  # noqa: ANN001
    """This thread's CPU per ``check_order`` published (and not waited for), each way,
    ``rounds`` times alternating; before any worker runs, and the queue emptied after."""
    from risk_tasks.client import RiskClient

    order = {"order_id": "o-1", "account_id": "A", "symbol": "S000", "side": "buy",
             "quantity": "1", "order_type": "market"}
    figures: dict[str, list[float]] = {"kombu": [], "direct": []}
    for round_ in range(rounds):
        for direct in ((False, True) if round_ % 2 == 0 else (True, False)):
            with RiskClient(app, timeout=5.0, direct=direct) as client:
                for _ in range(200):  # warm up
                    client._publish("risk.check_order", [order], 5.0, time.perf_counter())
                began = time.thread_time()
                for _ in range(n):
                    client._publish("risk.check_order", [order], 5.0, time.perf_counter())
                cpu = time.thread_time() - began
            figures["direct" if direct else "kombu"].append(round(cpu / n * 1e6, 1))
    with app.connection_for_write() as connection:
        connection.default_channel.client.delete("pretrade")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per step")
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--publishes", type=int, default=3000,
                        help="calls per round of the publish-only measurement")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args()
    started = start_services()
    os.environ.setdefault("RISK_RATE_LIMIT_PER_SECOND", "1000000")  # measure the path
    os.environ.setdefault("RISK_PRICE_STALE_SECONDS", "30")
    stop = threading.Event()
    worker = None
    try:
        from risk_tasks.app import app
        from risk_tasks.roles import ROLES, worker_command
        from risk_tasks.runtime import runtime

        ids, marks = populate(args.accounts, 50)
        threading.Thread(target=refresh_prices, args=(stop,), daemon=True).start()
        publish_only = publish_cpu(app, args.publishes)
        worker = subprocess.Popen(worker_command("pretrade", name="bench-pretrade"),
                                  env=dict(os.environ, **ROLES["pretrade"].env),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  start_new_session=True)
        deadline = time.monotonic() + 30
        while not app.control.ping(timeout=0.5):
            if time.monotonic() > deadline:
                raise RuntimeError("the pretrade worker did not start")
        env = {k: v for k, v in os.environ.items() if k.startswith("RISK_")}
        base = {"env": env, "ids": ids, "marks": marks, "seed": 1, "duration": args.duration}
        store = runtime().redis
        runs: list[dict] = []
        for round_ in range(args.rounds):
            for step, (processes, params) in STEPS.items():
                order = (False, True) if round_ % 2 == 0 else (True, False)
                for direct in order:
                    figures = with_cpu([worker.pid], store, lambda: run_clients(
                        "single", processes, dict(base, **params, direct=direct)))
                    runs.append({"round": round_ + 1, "step": step,
                                 "publish": "direct" if direct else "kombu", **figures})
        result = {"benchmark": "client_publish", "machine": machine(),
                  "accounts": args.accounts, "rounds": args.rounds,
                  "publish_only_cpu_us": publish_only, "runs": runs}
        rows = [{"path": f"{r['step']}, {r['publish']}, round {r['round']}", **r}
                for r in sorted(runs, key=lambda r: (list(STEPS).index(r["step"]),
                                                     r["publish"], r["round"]))]
        emit("check_order by how the client publishes (ms; per_second = decisions/s)",
             result, rows, ["path", "per_second", "p50_ms", "p99_ms", "caller_cpu_us",
                            "worker_cpu_us", "redis_cpu_us"], args.out)
    finally:
        stop.set()
        if worker is not None:
            worker.terminate()
            worker.wait(timeout=20)
        for server in started:
            server.cleanup()


if __name__ == "__main__":
    main()
