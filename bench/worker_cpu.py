"""CPU time per call of the pretrade worker and of the caller, beside the round trip.

    FAST=1 .venv/bin/python bench/worker_cpu.py   # the lean pre-trade strategy (default)
    FAST=0 .venv/bin/python bench/worker_cpu.py   # Celery's default strategy

2,000 sequential calls each of ``risk.ping`` (stock Celery no-op), ``risk.check_order``
sent raw and through ``RiskClient``; the worker's CPU time comes from its process
counters (psutil), the caller's from ``os.times``. CPU time is far less sensitive than
latency to other work on a shared machine, so it shows what a change costs or saves.
"""
import sys, time, subprocess, os, random, gc
sys.path.insert(0, "/work/main")
os.environ.setdefault("RISK_PRICE_STALE_SECONDS", "600")
os.environ.setdefault("RISK_RATE_LIMIT_PER_SECOND", "100000")
from bench.common import start_services


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc (Linux)."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
started = start_services()
try:
    from risk_tasks.app import app
    from risk_tasks.roles import worker_command
    from risk_tasks.runtime import runtime
    from risk_tasks.client import RiskClient
    from risk_tasks.engine.policies import DEFAULT_POLICIES
    from risk_tasks.simulator import Market, population, symbol_names, symbol_specs
    rt = runtime()
    market = Market(symbol_names(50), seed=3)
    rt.store.put_symbols(symbol_specs(market.names))
    rt.store.put_policies(DEFAULT_POLICIES)
    rt.store.ingest_prices(market.marks(), time.time())
    rt.store.create_accounts(population(2000, market, seed=3, max_leverage=6.0))
    ids = rt.store.shard_account_ids(0)
    marks = market.marks()
    env = dict(os.environ, RISK_BROKER_ACK_EMULATION="0", RISK_PRETRADE_FAST_STRATEGY=os.environ.get("FAST", "1"))
    w = subprocess.Popen(worker_command("pretrade"), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(6)
    rng = random.Random(1)
    def order(n):
        s = rng.choice(list(marks))
        return {"order_id": f"o-{time.time_ns()}-{n}", "account_id": rng.choice(ids), "symbol": s,
                "side": "BUY" if rng.random() < .5 else "SELL",
                "quantity": max(round(rng.uniform(200, 5000) / float(marks[s]), 4), 0.0001), "order_type": "MARKET"}
    client = RiskClient(app=app, timeout=1.0)
    def pct(l):
        l.sort(); return "p50 %.3f p99 %.3f" % (l[len(l)//2]*1e3, l[int(len(l)*.99)]*1e3)
    N = 2000
    for label, fn in [
        ("ping raw", lambda i: app.send_task("risk.ping", argsrepr="", kwargsrepr="").get(timeout=1, interval=0.001)),
        ("check raw", lambda i: app.send_task("risk.check_order", args=[order(i)], argsrepr="", kwargsrepr="").get(timeout=1, interval=0.001)),
        ("check client", lambda i: client.check_order(order(i))),
        ("ping raw", lambda i: app.send_task("risk.ping", argsrepr="", kwargsrepr="").get(timeout=1, interval=0.001)),
    ]:
        for i in range(300): fn(i)
        lat = []
        c0 = cpu_seconds(w.pid); s0 = os.times()
        for i in range(N):
            t = time.perf_counter(); fn(i); lat.append(time.perf_counter() - t)
        c1 = cpu_seconds(w.pid); s1 = os.times()
        wcpu = (c1 - c0) / N * 1e6
        ccpu = (s1.user + s1.system - s0.user - s0.system) / N * 1e6
        print(label, pct(lat), "worker cpu us/call %.0f client cpu us/call %.0f" % (wcpu, ccpu), flush=True)
    w.terminate(); w.wait()
finally:
    for s in started: s.stop()
