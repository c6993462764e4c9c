"""One shard evaluated in process, under cProfile: where a shard-tick goes.

    RISK_SHARDS=1 .venv/bin/python bench/profile_shard.py 125000

Loads N accounts (the simulator population), runs three warm-up ticks on shard 0, then
ten profiled ticks (every price moves each tick) and prints their times and the profile.
"""
import cProfile, os, pstats, sys, time
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("RISK_SHARDS", "8")
os.environ.setdefault("RISK_PRICE_STALE_SECONDS", "600")
os.environ.setdefault("RISK_FEED_STALE_SECONDS", "0")
from bench.common import start_services
started = start_services()
try:
    from bench.sweep import populate
    from risk_tasks.runtime import runtime
    from risk_tasks.simulator import Market, symbol_names
    from risk_tasks.tasks.monitor import evaluator
    n = int(sys.argv[1])
    populate(n, 50)
    rt = runtime()
    market = Market(symbol_names(50), seed=3)
    ev = evaluator()
    for _ in range(3):
        rt.store.ingest_prices(market.step(), time.time())
        ev.run(0, time.time())
    times = []
    pr = cProfile.Profile()
    for i in range(10):
        rt.store.ingest_prices(market.step(), time.time())
        t = time.perf_counter()
        pr.enable(); r = ev.run(0, time.time()); pr.disable()
        times.append((time.perf_counter() - t) * 1000)
    print("shard ms", sorted(times), r.get("accounts"), {k: v for k, v in r.items() if k not in ("shard",)})
    pstats.Stats(pr).sort_stats("cumulative").print_stats(35)
finally:
    for s in started: s.stop()
