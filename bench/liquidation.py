"""Liquidation reaction: a price shock, the monitor tick after it, and every liquidation
it starts, to the last one completed. Also a SIGKILL soak of the liquidation worker.

    .venv/bin/python bench/liquidation.py                          # 100,000 accounts
    .venv/bin/python bench/liquidation.py --accounts 10000 --targets 210
    .venv/bin/python bench/liquidation.py --soak 50                # 50 SIGKILL trials

**Reaction.** The population is the simulator's (``risk_tasks.simulator.population``,
3 positions per account on average over 50 symbols, leverage up to 6, loaded through
the state store's bulk account commit as in ``bench/sweep.py``), plus ``--targets``
accounts that hold the symbol ``SHK`` at a leverage spread evenly over [5, 9.5] and a
BTC position. The shock moves ``SHK`` by ``--shock`` (-9 %); no other account holds it.
Which accounts the shock makes liquidatable is computed beforehand, exactly, with the
engine (``compute_metrics`` / ``is_liquidatable``, Decimal); with the defaults that is
about 47 % of the targets (leverage above about 7.4). The benchmark ingests the shocked
price, sends ``risk.monitor_tick`` at once (as the next beat would, up to 1 s later),
and waits until every expected episode has completed. It prints the time from the
ingest to the last liquidation completed (from the episodes' own ``completed_at``), to
the tick's aggregate, and checks that exactly the expected accounts were liquidated,
once each (one episode per account, no symbol closed twice, every closed symbol flat,
and a second tick starting nothing). Emergency policies are not loaded: a -9 % move
would otherwise also stop and unwind the targets it does not liquidate, which is not
what this measures. The paper gateway is used (fills at mark). The liquidations run on
``--liq-workers`` workers of the ``actions`` role (solo pool, one process each; 3 by
default: on two cores two of them left a third of a core idle, each waiting on Redis for
part of every batch, and a third fills it); ``--liq-pool prefork`` runs one prefork worker of that
concurrency instead, for comparison. The JSON also gives each worker's CPU time from the
shock to the last episode seen done (all its processes, from /proc).

**Soak.** ``--soak N`` runs N trials: in each, a monitor tick finds ``--soak-accounts``
accounts with three positions each below zero equity and sends their liquidations; the
liquidation workers are SIGKILLed, new ones are started and the monitor keeps ticking
every second, as beat would: a killed worker's unacknowledged messages come back after
the broker's visibility timeout, and one lost in the transport (taken off the queue but
not yet recorded as unacknowledged when the worker died) is sent again by the monitor
after ``RISK_LIQUIDATION_RESEND_SECONDS``. The kill comes when a
random number (1 to N-1) of the trial's episodes has finished, so it lands mid-way. A trial counts episodes
*lost* (not completed within the timeout) and *doubled* (a position closed more than
once: more than one execution per account and symbol, or a finished account whose
balance is not the initial balance plus each position's PnL once, or not flat).
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (emit, group_cpu_seconds, machine,  # noqa: E402
                          machine_cpu_seconds, redis_command_seconds, settle_aof, redis_cpu_seconds, start_services,
                          warm_shard_caches)

SHOCK_SYMBOL = "SHK"
SHOCK_MARK = Decimal("100")


# -- WORKERS --

def start_worker(name: str, queues: str, concurrency: int, env: dict | None = None,
                 log: Path | None = None) -> subprocess.Popen:
    out = open(log, "ab") if log else subprocess.DEVNULL
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "risk_tasks", "worker", "-P", "prefork",
         "-c", str(concurrency), "-Q", queues, "-n", f"{name}@%h", "--without-gossip",
         "--without-mingle", "-l", "warning"],
        env=dict(os.environ, **(env or {})), stdout=out, stderr=out, start_new_session=True)


def start_liquidators(args: argparse.Namespace, name: str, log: Path) -> list[subprocess.Popen]:
    """The workers of the ``liquidation`` queue: the ``actions`` role's command (solo, one
    process each), ``--liq-workers`` of them; or, with ``--liq-pool prefork``, one
    prefork worker of that concurrency (for comparison). ``.node`` is each one's name."""
    from risk_tasks.roles import ROLES, worker_command

    if args.liq_pool == "prefork":
        worker = start_worker(name, "liquidation", args.liq_workers, log=log)
        worker.node = name
        return [worker]
    workers = []
    for i in range(args.liq_workers):
        out = open(log, "ab")
        worker = subprocess.Popen(worker_command("actions", name=f"{name}{i}"),
                                  env=dict(os.environ, **ROLES["actions"].env), stdout=out,
                                  stderr=out, start_new_session=True)
        worker.node = f"{name}{i}"
        workers.append(worker)
    return workers


def wait_ready(app, name: str, timeout: float = 60.0) -> None:  # noqa: ANN001
    import socket

    host = f"{name}@{socket.gethostname()}"
    deadline = time.monotonic() + timeout
    while not app.control.ping(destination=[host], timeout=0.5):
        if time.monotonic() > deadline:
            raise RuntimeError(f"worker {name} did not start")


def kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


def stop_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        kill_group(proc)


# -- POPULATION --

def targets(n: int, prefix: str = "tgt") -> list[tuple[dict, list]]:
    """Accounts holding SHK at leverage spread over [5, 9.5], plus 1x of BTC."""
    from risk_tasks.engine.model import Fill, Side

    out = []
    for i in range(n):
        account_id = f"{prefix}{i:06d}"
        balance = Decimal(10000)
        leverage = Decimal(5) + Decimal("4.5") * Decimal(i) / Decimal(max(n - 1, 1))
        qty = (balance * leverage / SHOCK_MARK).quantize(Decimal("0.0001"))
        fills = [Fill(f"{account_id}-shk", account_id, SHOCK_SYMBOL, Side.BUY, qty, SHOCK_MARK),
                 Fill(f"{account_id}-btc", account_id, "BTC", Side.BUY, Decimal("0.1"),
                      Decimal(60000))]
        out.append(({"account_id": account_id, "balance": balance}, fills))
    return out


def populate(rt, n_accounts: int, n_targets: int, symbols: int) -> dict:  # noqa: ANN001
    from risk_tasks.engine.model import PolicyType, SymbolSpec
    from risk_tasks.engine.policies import DEFAULT_POLICIES
    from risk_tasks.simulator import Market, population, symbol_names, symbol_specs

    rt.redis.flushdb()
    market = Market(symbol_names(symbols), seed=3)
    specs = symbol_specs(market.names) + [SymbolSpec(SHOCK_SYMBOL, Decimal("0.10"),
                                                     Decimal("0.05"), Decimal("0.5"), None)]
    rt.store.put_symbols(specs)
    rt.store.put_policies([p for p in DEFAULT_POLICIES if p.type is not PolicyType.EMERGENCY])
    marks = market.marks()
    marks["BTC"] = Decimal(60000)
    marks[SHOCK_SYMBOL] = SHOCK_MARK
    rt.store.ingest_prices(marks, time.time())
    started = time.perf_counter()
    rt.store.create_accounts(population(n_accounts - n_targets, market, seed=3,
                                        max_leverage=6.0))
    rt.store.create_accounts(targets(n_targets))
    load_s = time.perf_counter() - started
    rt.redis.delete("risk:journal")  # no drainer here; keep Redis memory honest
    return {"market": market, "marks": marks, "load_s": load_s}


def expected_liquidations(rt, marks: dict, n_targets: int) -> set[str]:  # noqa: ANN001
    """The accounts the shocked marks make liquidatable, computed exactly (every SHK
    holder; no other account's marks move)."""
    from risk_tasks.engine.metrics import compute_metrics, is_liquidatable

    specs = rt.store.current_config().specs
    found = set()
    for i in range(n_targets):
        account, _ = rt.store.read_account(f"tgt{i:06d}")
        m = compute_metrics(account.balance, account.positions, marks, specs,
                            account.peak_equity, account.daily_start_equity)
        if is_liquidatable(m):
            found.add(account.account_id)
    return found


# -- REACTION --

def tick(app, tick_ts: float) -> dict:  # noqa: ANN001
    reply = app.send_task("risk.monitor_tick", args=[tick_ts]).get(timeout=120)
    if not reply.get("callback_id"):
        raise RuntimeError(f"tick skipped: {reply}")
    return app.AsyncResult(reply["callback_id"]).get(timeout=300, interval=0.005)


def reaction(args: argparse.Namespace) -> dict:
    import orjson

    from risk_tasks import actions, episodes
    from risk_tasks.app import app
    from risk_tasks.runtime import runtime

    rt = runtime()
    world = populate(rt, args.accounts, args.targets, args.symbols)
    shocked = dict(world["marks"])
    shocked[SHOCK_SYMBOL] = (SHOCK_MARK * (1 + Decimal(str(args.shock)))).quantize(Decimal("0.01"))
    expected = expected_liquidations(rt, shocked, args.targets)
    before = expected_liquidations(rt, world["marks"], args.targets)
    assert not before, f"{len(before)} targets liquidatable before the shock"
    log_dir = Path(os.environ.get("RISK_BENCH_LOG_DIR", "var/bench-logs"))
    log_dir.mkdir(parents=True, exist_ok=True)
    monitor = start_worker("bench-liq-monitor", "monitor,shards", args.monitor_workers,
                           log=log_dir / "monitor.log")
    liquidators = start_liquidators(args, "bench-liq-actions", log_dir / "liquidation.log")
    try:
        wait_ready(app, "bench-liq-monitor")
        for worker in liquidators:
            wait_ready(app, worker.node)
        def warm_tick() -> dict:
            summary = tick(app, time.time())
            assert summary["liquidations_started"] == 0, summary
            return summary

        warm_shard_caches(warm_tick, args.monitor_workers, int(os.environ["RISK_SHARDS"]))
        aof_rewritten = settle_aof(rt.redis)
        cpu_before = {"liquidation": sum(group_cpu_seconds(w.pid) for w in liquidators),
                      "monitor": group_cpu_seconds(monitor.pid), "redis": redis_cpu_seconds(rt.redis)}
        rt.redis.config_resetstat()  # commandstats from the shock on
        machine_before = machine_cpu_seconds()
        own_before = time.process_time()
        # the shock
        shock_at = time.time()
        rt.store.ingest_prices({SHOCK_SYMBOL: shocked[SHOCK_SYMBOL]}, shock_at)
        tick_ts = time.time()
        summary = tick(app, tick_ts)
        tick_done = time.time()
        ids = sorted(expected)
        progress_keys = [actions.liquidation_key(episodes.episode_id(a, tick_ts)) for a in ids]
        deadline = time.monotonic() + args.timeout
        # Poll lightly (only the episodes not seen finished, every 50 ms): the figures
        # come from the episodes' own completed_at, and the poller shares the 2 cores.
        found: dict[str, dict] = {}
        while True:
            waiting = [k for k in progress_keys if k not in found]
            for key, raw in zip(waiting, rt.redis.mget(waiting) if waiting else []):
                if raw is not None and b'"status":"running"' not in raw:
                    data = orjson.loads(raw)
                    if data["status"] in actions.FINAL:
                        found[key] = data
            if len(found) == len(ids) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        finished = list(found.values())
        seen_done = time.time()
        machine_after = machine_cpu_seconds()
        own_cpu = time.process_time() - own_before
        cpu = {"liquidation": sum(group_cpu_seconds(w.pid) for w in liquidators)
               - cpu_before["liquidation"], "redis": redis_cpu_seconds(rt.redis) - cpu_before["redis"],
               "monitor": group_cpu_seconds(monitor.pid) - cpu_before["monitor"]}
        redis_commands = redis_command_seconds(rt.redis)
        # verification: exactly the expected accounts, once each
        all_keys = [k.decode() for k in rt.redis.scan_iter(match="risk:action:liq:*", count=10000)]
        episodes_by_account: dict[str, int] = {}
        for key in all_keys:
            account = key[len("risk:action:liq:liq:"):].rsplit(":", 1)[0]
            episodes_by_account[account] = episodes_by_account.get(account, 0) + 1
        doubled_symbols = 0
        not_flat = 0
        for d in finished:
            symbols = [s["symbol"] for s in d["steps"]]
            doubled_symbols += len(symbols) - len(set(symbols))
            account, _ = rt.store.read_account(d["account_id"])
            not_flat += sum(1 for s in symbols if s in account.positions)
        second = tick(app, time.time())
        completed_at = [d["completed_at"] for d in finished]
        result = {
            "accounts": args.accounts, "targets": args.targets, "shock": args.shock,
            "expected_liquidations": len(ids),
            "liquidated_accounts": len(episodes_by_account),
            "unexpected_accounts": len(set(episodes_by_account) - expected),
            "missing_accounts": len(expected - set(episodes_by_account)),
            "accounts_with_two_episodes": sum(1 for n in episodes_by_account.values() if n > 1),
            "completed": sum(1 for d in finished if d["status"] == "completed"),
            "skipped": sum(1 for d in finished if d["status"] == "skipped"),
            "symbols_closed_twice": doubled_symbols, "closed_but_not_flat": not_flat,
            "positions_closed": sum(len(d["steps"]) for d in finished),
            "liquidations_started_by_tick": summary["liquidations_started"],
            "liquidations_started_by_next_tick": second["liquidations_started"],
            "tick_duration_ms": summary["duration_ms"],
            "tick_cache_loads": summary.get("cache_loads"),
            "tick_slowest_shard_phases_ms": summary.get("slowest_shard_phases_ms"),
            "shock_to_tick_done_ms": round((tick_done - shock_at) * 1000, 1),
            "shock_to_last_liquidation_ms": round((max(completed_at) - shock_at) * 1000, 1)
            if completed_at else None,
            "shock_to_first_liquidation_ms": round((min(completed_at) - shock_at) * 1000, 1)
            if completed_at else None,
            "observed_all_done_ms": round((seen_done - shock_at) * 1000, 1),
            # how many of the cores were busy from the shock to the last seen done
            # (every process on the machine: workers, Redis, this poller, the rest)
            "machine_busy_cores": round((machine_after["busy"] - machine_before["busy"])
                                        / (seen_done - shock_at), 2),
            "machine_steal_cores": round((machine_after["steal"] - machine_before["steal"])
                                         / (seen_done - shock_at), 2),
            "machine_cpu_s": {k: round(machine_after[k] - machine_before[k], 2)
                              for k in ("user", "system", "interrupts")},
            "bench_poller_cpu_s": round(own_cpu, 2),
            "aof_rewritten_before_shock": aof_rewritten,
            # liquidations completed by each tenth of the time to the last one
            "completed_by_tenths": completed_by_tenths(completed_at, shock_at),
            # CPU of each worker (all its processes) from the shock to the last seen done
            "liquidation_worker_cpu_s": round(cpu["liquidation"], 2),
            "liquidation_worker_cpu_ms_per_episode": round(cpu["liquidation"] * 1000 / len(ids), 2)
            if ids else None,
            "monitor_worker_cpu_s": round(cpu["monitor"], 2),
            "redis_cpu_s": round(cpu["redis"], 2),  # the server's, all clients (this poller too)
            "redis_busiest_commands": redis_commands,
            "monitor_workers": args.monitor_workers, "liquidation_workers": args.liq_workers,
            "liquidation_pool": args.liq_pool,
            "redis_transport": "unix" if args.unix_socket else "tcp",
            "shards": int(os.environ["RISK_SHARDS"]), "load_s": round(world["load_s"], 1),
        }
        result["exact"] = (result["unexpected_accounts"] == result["missing_accounts"]
                           == result["accounts_with_two_episodes"]
                           == result["symbols_closed_twice"] == result["closed_but_not_flat"]
                           == result["liquidations_started_by_next_tick"] == 0
                           and result["completed"] == len(ids))
        return result
    finally:
        stop_group(monitor)
        for worker in liquidators:
            stop_group(worker)


def completed_by_tenths(completed_at: list[float], since: float) -> list[int]:
    """How many had completed at 10 %, 20 %, ... 100 % of the time to the last one: a
    straight line is a steady rate, a late climb a slow start."""
    if not completed_at:
        return []
    span = max(completed_at) - since
    return [sum(1 for t in completed_at if t - since <= span * k / 10) for k in range(1, 11)]


# -- SOAK --

def soak(args: argparse.Namespace) -> dict:
    import orjson

    from risk_tasks.app import app
    from risk_tasks.engine.model import Fill, Side, SymbolSpec
    from risk_tasks.gateways.paper import execution_key
    from risk_tasks.runtime import runtime

    rt = runtime()
    rng = random.Random(args.seed)
    log_dir = Path(os.environ.get("RISK_BENCH_LOG_DIR", "var/bench-logs"))
    log_dir.mkdir(parents=True, exist_ok=True)
    trials = []
    symbols = ["AAA", "BBB", "CCC"]
    # The monitor opens the episodes and sends the liquidations, as in production, and
    # keeps ticking after the kill: a message lost with the killed worker is sent again
    # by the monitor (RISK_LIQUIDATION_RESEND_SECONDS), not by this script.
    monitor = start_worker("soak-monitor", "monitor,shards", 1, log=log_dir / "soak.log")
    wait_ready(app, "soak-monitor")

    def tick() -> None:
        app.send_task("risk.monitor_tick", args=[time.time()]).get(timeout=60)

    try:
        for trial in range(args.soak):
            rt.redis.flushdb()
            rt.store.put_symbols([SymbolSpec(s, Decimal("0.10"), Decimal("0.05"))
                                  for s in symbols])
            rt.store.ingest_prices({s: Decimal(100) for s in symbols}, time.time())
            n = args.soak_accounts
            ids = [f"soak{trial}-{i}" for i in range(n)]
            rt.store.create_accounts([
                ({"account_id": account_id, "balance": Decimal(500)}, [
                    Fill(f"{account_id}-{s}", account_id, s, Side.BUY, Decimal(10 + 5 * j),
                         Decimal(100)) for j, s in enumerate(symbols)])
                for account_id in ids])
            shocked = {"AAA": Decimal(80), "BBB": Decimal(85), "CCC": Decimal(90)}
            rt.store.ingest_prices(shocked, time.time())
            # each account loses 10 x 20 + 15 x 15 + 20 x 10 = 625 > 500: equity below
            # zero, so every position is closed
            workers = start_liquidators(args, f"soak-{trial}-", log_dir / "soak.log")
            for worker in workers:
                wait_ready(app, worker.node)

            def flat() -> int:
                pipe = rt.redis.pipeline(transaction=False)
                for account_id in ids:
                    pipe.hlen(f"risk:pos:{account_id}")
                return sum(1 for held in pipe.execute() if not held)

            tick()  # opens one episode per account and sends its liquidation
            # Kill once a random number of the accounts is flat: mid-way, by design.
            target = rng.randint(1, n - 1)
            wait_until = time.monotonic() + args.timeout
            while flat() < target and time.monotonic() < wait_until:
                time.sleep(0.001)
            at_kill = flat()
            for worker in workers:
                kill_group(worker)
            replacements = start_liquidators(args, f"soak-{trial}-b", log_dir / "soak.log")
            deadline = time.monotonic() + args.timeout
            next_tick = time.monotonic()
            while flat() < n and time.monotonic() < deadline:
                if time.monotonic() >= next_tick:
                    rt.store.ingest_prices(shocked, time.time())
                    tick()
                    next_tick = time.monotonic() + 1.0
                time.sleep(0.05)
            lost = n - flat()
            doubled = 0
            for i, account_id in enumerate(ids):
                account, _ = rt.store.read_account(account_id)
                per_symbol: dict[str, int] = {}
                for k in rt.redis.scan_iter(match=f"{execution_key('liq:')}{account_id}:*"):
                    data = orjson.loads(rt.redis.get(k))
                    per_symbol[data["symbol"]] = per_symbol.get(data["symbol"], 0) + 1
                pnl = sum(((shocked[s] - Decimal(100)) * Decimal(10 + 5 * j)
                           for j, s in enumerate(symbols) if s not in account.positions),
                          Decimal(0))
                if any(v > 1 for v in per_symbol.values()) or \
                        account.balance != Decimal(500) + pnl:
                    doubled += 1
            resent = 0
            for line in (log_dir / "soak.log").read_text(errors="replace").splitlines():
                if "sent again" in line and f"soak{trial}-" in line:
                    resent += 1
            for worker in replacements:
                stop_group(worker)
            trials.append({"trial": trial, "done_at_kill": at_kill, "lost": lost,
                           "doubled": doubled, "resend_log_lines": resent})
            print(f"  trial {trial}: {at_kill}/{n} flat at the kill, lost {lost}, "
                  f"doubled {doubled}, re-send lines {resent}", file=sys.stderr)
    finally:
        stop_group(monitor)
    return {"trials": len(trials), "accounts_per_trial": args.soak_accounts,
            "lost": sum(t["lost"] for t in trials), "doubled": sum(t["doubled"] for t in trials),
            "killed_mid_way": sum(1 for t in trials if 0 < t["done_at_kill"] < args.soak_accounts),
            "trials_with_resend": sum(1 for t in trials if t["resend_log_lines"]),
            "per_trial": trials}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--targets", type=int, default=2_100,
                        help="SHK holders; about 47 %% of them become liquidatable")
    parser.add_argument("--shock", type=float, default=-0.09)
    parser.add_argument("--symbols", type=int, default=50)
    parser.add_argument("--shards", type=int, default=int(os.environ.get("RISK_SHARDS", 8)))
    parser.add_argument("--monitor-workers", type=int, default=2)
    parser.add_argument("--liq-workers", type=int, default=3,
                        help="how many actions-role workers (solo); with --liq-pool "
                             "prefork, the one prefork worker's concurrency")
    parser.add_argument("--liq-pool", choices=("solo", "prefork"), default="solo")
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--soak", type=int, default=0, help="SIGKILL trials instead")
    parser.add_argument("--soak-accounts", type=int, default=40)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--unix-socket", action="store_true",
                        help="every process reaches Redis over its Unix socket, not TCP")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    os.environ["RISK_SHARDS"] = str(args.shards)
    os.environ.setdefault("RISK_PRICE_STALE_SECONDS", "600")
    os.environ.setdefault("RISK_MONITOR_DEADLINE_SECONDS", "600")  # measure, do not drop
    os.environ.setdefault("RISK_FEED_STALE_SECONDS", "0")
    os.environ.setdefault("RISK_LOG_JSON", "1")
    if args.soak:
        # Redelivery of a killed worker's messages after 6 s; leases expire before that.
        os.environ.setdefault("RISK_VISIBILITY_TIMEOUT_SECONDS", "6")
        os.environ.setdefault("RISK_LEASE_TTL_SECONDS", "3")
        os.environ.setdefault("RISK_GATEWAY_TIMEOUT_SECONDS", "1")
        os.environ.setdefault("RISK_LIQUIDATION_RESEND_SECONDS", "8")
    started_services = start_services(unix_socket=args.unix_socket)
    try:
        if args.soak:
            result = soak(args)
            emit("liquidation SIGKILL soak", {"benchmark": "liquidation_soak",
                                              "machine": machine(), **result},
                 [result], ["trials", "accounts_per_trial", "killed_mid_way", "lost", "doubled",
                           "trials_with_resend"],
                 args.out)
        else:
            result = reaction(args)
            emit("liquidation reaction", {"benchmark": "liquidation", "machine": machine(),
                                          **result}, [result],
                 ["accounts", "expected_liquidations", "liquidated_accounts", "exact",
                  "tick_duration_ms", "shock_to_tick_done_ms", "shock_to_last_liquidation_ms"],
                 args.out)
    finally:
        forget_subscriptions()
        for server in started_services:
            server.cleanup()


def forget_subscriptions() -> None:
    """Celery unsubscribes from a waited-on result when the result object is deleted,
    which for some of ours is at exit, after Redis has stopped: each printed a traceback
    there. The connection goes with the process; nothing is left to unsubscribe."""
    from risk_tasks.app import app

    consumer = getattr(app.backend, "result_consumer", None)
    if consumer is not None:
        consumer.subscribed_to.clear()


if __name__ == "__main__":
    main()
