"""Shared helpers of the benchmarks: servers, percentiles, output as JSON and a table."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, int(round(q * len(sorted_values) + 0.5)) - 1))
    return sorted_values[index]


def latency_summary(latencies_s: list[float]) -> dict[str, float | None]:
    values = sorted(latencies_s)
    ms = lambda v: None if v is None else round(v * 1000, 3)  # noqa: E731
    return {"p50_ms": ms(percentile(values, 0.50)), "p99_ms": ms(percentile(values, 0.99)),
            "p999_ms": ms(percentile(values, 0.999)), "max_ms": ms(values[-1] if values else None),
            "samples": len(values)}


def start_services(need_database: bool = False, unix_socket: bool = False) -> list[Any]:
    """Throw-away Redis (and PostgreSQL) unless RISK_REDIS_URL / RISK_DATABASE_URL are
    set; sets the RISK_* variables (with ``unix_socket``, every process reaches Redis
    over its Unix socket instead of TCP). Returns what to clean up."""
    from tests.support.services import PostgresServer, RedisServer

    started: list[Any] = []
    if not os.environ.get("RISK_REDIS_URL"):
        redis_server = RedisServer().start()
        started.append(redis_server)
        base = f"redis://127.0.0.1:{redis_server.port}"
        os.environ.update(RISK_BROKER_URL=f"{base}/0", RISK_RESULT_BACKEND=f"{base}/1",
                          RISK_REDIS_URL=f"{base}/2")
        if unix_socket:
            os.environ.update(redis_server.socket_urls())
    if not os.environ.get("RISK_DATABASE_URL"):
        if need_database:
            pg = PostgresServer().start()
            started.append(pg)
            os.environ["RISK_DATABASE_URL"] = pg.url
        else:
            os.environ["RISK_DATABASE_URL"] = f"sqlite:///{ROOT}/var/bench.db"
    return started


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU time of the live processes of process group ``pgid`` (a worker
    started in its own session and its pool children), from /proc (Linux)."""
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            fields = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        if int(fields[2]) == pgid:
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def machine_cpu_seconds() -> dict[str, float]:
    """CPU seconds of the whole machine so far, all cores (/proc/stat): ``busy`` (user,
    system, interrupts), ``steal`` (taken by the hypervisor) and ``idle``. Busy over
    elapsed time is how many cores were in use, whoever used them."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    tick = os.sysconf("SC_CLK_TCK")
    user, nice, system, idle, iowait, irq, softirq, steal = fields
    return {"busy": (user + nice + system + irq + softirq) / tick, "steal": steal / tick,
            "idle": (idle + iowait) / tick, "user": (user + nice) / tick,
            "system": system / tick, "interrupts": (irq + softirq) / tick}


def settle_aof(client: Any, timeout: float = 300.0) -> bool:
    """Rewrite Redis's append-only file now, and wait for it, so that no automatic
    rewrite starts in the measured window. Loading a population grows the file past
    Redis's trigger (double its last size, at least 64 MB), and the rewrite it then
    forks took about a core for a second or more in the middle of measurements. False
    when AOF is off (nothing to do)."""
    if client.info("persistence").get("aof_enabled") != 1:
        return False
    deadline = time.monotonic() + timeout

    def wait() -> None:
        while True:
            info = client.info("persistence")
            if not (info["aof_rewrite_in_progress"] or info["aof_rewrite_scheduled"]):
                return
            if time.monotonic() > deadline:
                raise RuntimeError("Redis's AOF rewrite did not finish")
            time.sleep(0.05)

    wait()
    client.bgrewriteaof()
    time.sleep(0.05)
    wait()
    return True


def redis_cpu_seconds(client: Any) -> float:
    """The Redis server's CPU seconds so far (``INFO cpu``), all clients together."""
    info = client.info("cpu")
    return info["used_cpu_sys"] + info["used_cpu_user"]


def redis_command_seconds(client: Any, top: int = 12) -> dict[str, dict]:
    """The Redis server's busiest commands since its last ``CONFIG RESETSTAT``
    (``INFO commandstats``): calls and CPU seconds of each, most CPU first. Scripts
    count under ``evalsha``/``eval``, and the commands they run also under their own
    names, so the rows overlap."""
    stats = client.info("commandstats")
    rows = sorted(((name.removeprefix("cmdstat_"), v) for name, v in stats.items()),
                  key=lambda item: -item[1]["usec"])
    return {name: {"calls": v["calls"], "cpu_s": round(v["usec"] / 1e6, 3),
                   "us_per_call": round(v["usec_per_call"], 1)} for name, v in rows[:top]}


def warm_shard_caches(run_tick: Any, processes: int, shards: int, quiet_ticks: int = 8,
                      max_ticks: int = 120) -> int:
    """Tick until the monitor processes' shard caches are warm; returns the ticks taken.

    Warm means every process loaded every shard once, or ``quiet_ticks`` ticks in a row
    loaded none. A few quiet ticks do not prove much: any process may take any shard,
    and a process's first sight of one (a full load, seconds at 1,000,000 accounts)
    must not land in a measured tick. But prefork hands a shard to the same child tick
    after tick once it runs steadily, so a process may never draw some shard at all.
    ``run_tick()`` runs one tick and returns its ``aggregate_tick`` summary."""
    loads = quiet = 0
    for ticks in range(1, max_ticks + 1):
        fresh = run_tick().get("cache_loads") or 0
        loads += fresh
        quiet = 0 if fresh else quiet + 1
        if quiet and (loads >= processes * shards or quiet >= quiet_ticks):
            return ticks
    raise RuntimeError(f"shard caches still loading after {max_ticks} ticks")


def machine() -> dict[str, Any]:
    import platform

    load = os.getloadavg()
    return {"cpus": os.cpu_count(), "python": platform.python_version(),
            "load_avg_1m_at_start": round(load[0], 2),
            "date": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())}


def emit(name: str, result: dict[str, Any], rows: list[dict[str, Any]], columns: list[str],
         out: str | None) -> None:
    """Print the result as JSON and as a table; write the JSON to ``out`` if given."""
    from rich.console import Console
    from rich.table import Table

    text = json.dumps(result, indent=2, default=str)
    print(text)
    table = Table(title=name)
    for c in columns:
        table.add_column(c)
    for row in rows:
        table.add_row(*["" if row.get(c) is None else str(row.get(c)) for c in columns])
    Console(stderr=True).print(table)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text + "\n")
