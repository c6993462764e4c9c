"""``riskctl run``: the whole system on one machine, driven by the simulator.

Starts the four worker roles, beat and Flower as child processes (the same command
lines as docker-compose, from ``risk_tasks.roles``), seeds a market and a population if
the state store is empty, then runs the simulator and prints live figures until the
duration ends or Ctrl-C. Every child is stopped on the way out.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import time
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Callable

from risk_tasks.monitor.cache import startup_allowance
from risk_tasks.roles import ROLES, beat_command, flower_command, worker_command


@dataclass
class Child:
    name: str
    command: list[str]
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen | None = None

    def start(self, log_dir: Path) -> None:
        log = open(log_dir / f"{self.name}.log", "ab")
        self.process = subprocess.Popen(self.command, env=dict(os.environ, **self.env),
                                        stdout=log, stderr=log, start_new_session=True)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 15) -> None:
        if not self.alive():
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=5)


def flower_credentials() -> tuple[str, bool]:
    """``user:password`` for Flower: RISK_FLOWER_BASIC_AUTH, or a fresh random one."""
    from risk_tasks.settings import get_settings

    configured = get_settings().flower_basic_auth
    if configured:
        return configured, False
    return f"operator:{secrets.token_urlsafe(12)}", True


def children(flower_port: int, with_flower: bool, log_dir: Path) -> list[Child]:
    from risk_tasks.settings import get_settings

    # One /metrics endpoint per host process: RISK_METRICS_PORT for the first, the next
    # ports for the others (0 keeps every endpoint off).
    base = get_settings().metrics_port

    def port(i: int) -> dict[str, str]:
        return {"RISK_METRICS_PORT": str(base + i if base else 0)}

    procs = [Child(f"worker-{role}", worker_command(role, name=role),
                   {**ROLES[role].env, **port(i)})
             for i, role in enumerate(ROLES)]
    procs.append(Child("beat", beat_command(schedule_file=str(log_dir / "celerybeat-schedule")),
                       port(len(ROLES))))
    if with_flower:
        auth, _ = flower_credentials()
        procs.append(Child("flower", flower_command(flower_port), {"FLOWER_BASIC_AUTH": auth}))
    return procs


def seed(rt, n_accounts: int, n_symbols: int, seed_value: int,  # noqa: ANN001
         say: Callable[[str], None]):  # noqa: ANN201
    """Symbols, default policies, a population and first prices, unless already there."""
    from risk_tasks.policy_store import publish_policies, save_symbols
    from risk_tasks.simulator import Market, population, symbol_names, symbol_specs

    market = Market(symbol_names(n_symbols), seed=seed_value)
    specs = symbol_specs(market.names)
    with rt.sessions() as session, session.begin():
        save_symbols(session, specs)
    publish_policies(rt.sessions, rt.store)
    rt.store.put_symbols(specs)
    rt.store.ingest_prices(market.marks(), time.time())
    existing = sum(rt.redis.llen(f"risk:shard:{k}:members") for k in range(rt.settings.shards))
    if existing < n_accounts:
        say(f"creating {n_accounts - existing} accounts ...")
        started = time.monotonic()
        counts = rt.store.create_accounts(
            (a, f) for i, (a, f) in enumerate(population(n_accounts, market, seed=seed_value))
            if i >= existing)
        say(f"  {counts['created']} accounts, {counts['fills']} opening fills in "
            f"{time.monotonic() - started:.1f} s")
    return market


def run_system(n_accounts: int, n_symbols: int, rate: float, duration: float,
               flower_port: int, with_flower: bool, seed_value: int,
               say: Callable[[str], None]) -> int:
    import models
    from risk_tasks.app import app
    from risk_tasks.runtime import runtime
    from risk_tasks.simulator import Simulation

    rt = runtime()
    rt.redis.ping()
    models.migrate(rt.settings.database_url)
    market = seed(rt, n_accounts, n_symbols, seed_value, say)
    account_ids = [a for a in rt.store.iter_account_ids()][:max(n_accounts, 1)]
    log_dir = Path("var/run-logs")
    log_dir.mkdir(parents=True, exist_ok=True)
    procs = children(flower_port, with_flower, log_dir)
    if with_flower:
        auth, generated = flower_credentials()
        os.environ.setdefault("RISK_FLOWER_BASIC_AUTH", auth)
    for child in procs:
        child.start(log_dir)
    try:
        # A monitor worker reads every shard before it answers (RISK_MONITOR_PRELOAD).
        _wait_for_workers(app, list(ROLES), say,
                          timeout=startup_allowance(len(account_ids)))
        if with_flower:
            user, password = auth.split(":", 1)
            say(f"Flower: http://127.0.0.1:{flower_port}  user {user}  password {password}"
                + ("  (generated; set RISK_FLOWER_BASIC_AUTH to choose)" if generated else ""))
        say(f"logs: {log_dir}/   stop with Ctrl-C")
        sim = Simulation(app, market, account_ids, rate=rate)
        stop = sim.stop
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        try:
            final = sim.run(duration, report=lambda s: say(live_line(rt, s)))
        except KeyboardInterrupt:
            stop.set()
            final = sim.summary(0)
        say("final: " + live_line(rt, final))
        return 0
    finally:
        for child in reversed(procs):
            child.stop()


def _wait_for_workers(app, names: list[str], say: Callable[[str], None],  # noqa: ANN001
                      timeout: float = 60) -> None:
    import socket

    host = socket.gethostname()
    wanted = {f"{n}@{host}" for n in names}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        replies = app.control.ping(timeout=1.0)
        seen = {name for reply in replies for name in reply}
        if wanted <= seen:
            say(f"workers ready: {', '.join(sorted(seen))}")
            return
    raise RuntimeError(f"workers not ready after {timeout:.0f} s (see var/run-logs/)")


def live_line(rt, s: dict) -> str:  # noqa: ANN001
    """One line of live figures: what callers saw, the monitor, actions, the backlog."""
    monitor = {k.decode(): v.decode() for k, v in rt.redis.hgetall("risk:monitor:last").items()}
    backlog = rt.drainer.backlog()
    p50 = "-" if s.get("p50_ms") is None else f"{s['p50_ms']:.1f}"
    p99 = "-" if s.get("p99_ms") is None else f"{s['p99_ms']:.1f}"
    tick = (f"tick {float(monitor['duration_ms']):.0f} ms / {monitor.get('accounts', '?')} accts"
            if monitor.get("duration_ms") else "tick -")
    return (f"t={s.get('elapsed_s', 0):>5}s  checks {s.get('rate', 0):6.1f}/s "
            f"approved {100 * s.get('approved', 0):5.1f}%  p50 {p50} ms  p99 {p99} ms | "
            f"{tick}  violations {monitor.get('violations', '-')}  "
            f"liquidations {monitor.get('liquidations_started', '-')} | "
            f"audit backlog {sum(backlog.values())}")


__all__ = ["run_system", "Decimal"]
