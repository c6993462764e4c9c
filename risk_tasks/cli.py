"""``riskctl``: the operator's console.

Exit codes scripts can rely on: 0 done; 1 refused or failed (a resume by someone off the
allow-list, a load with bad lines); 2 usage error; 3 Redis or the database unreachable.
Every listing prints a table, or JSON with ``--json``.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import time
from typing import Any, Iterator

import click
import orjson
from rich.console import Console
from rich.table import Table

from risk_tasks.roles import ROLES

EXIT_REFUSED = 1
EXIT_UNAVAILABLE = 3

console = Console()
err = Console(stderr=True)


def _mask(url: str) -> str:
    return re.sub(r"//([^:@/]*):[^@/]*@", r"//\1:***@", url)


@contextlib.contextmanager
def infrastructure() -> Iterator[None]:
    """Turn 'cannot reach Redis/the database' into a clear message and exit code 3."""
    import kombu.exceptions
    import redis
    from sqlalchemy.exc import OperationalError

    from risk_tasks.settings import get_settings

    settings = get_settings()
    try:
        yield
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
        err.print(f"[red]cannot reach Redis at {_mask(settings.redis_url)}: {exc}[/red]")
        sys.exit(EXIT_UNAVAILABLE)
    except kombu.exceptions.OperationalError as exc:  # the broker, reached through Celery
        err.print(f"[red]cannot reach the broker at {_mask(settings.broker_url)}: {exc}[/red]")
        sys.exit(EXIT_UNAVAILABLE)
    except OperationalError as exc:
        first = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        err.print(f"[red]cannot reach the database at {_mask(settings.database_url)}: "
                  f"{first}[/red]")
        sys.exit(EXIT_UNAVAILABLE)


def emit(data: Any, as_json: bool, render: Any = None) -> None:
    if as_json or render is None:
        click.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2, default=str).decode())
    else:
        render(data)


def table(rows: list[dict], columns: list[str], title: str | None = None) -> None:
    t = Table(title=title)
    for c in columns:
        t.add_column(c)
    for row in rows:
        t.add_row(*["" if row.get(c) is None else str(row.get(c)) for c in columns])
    console.print(t)


def rt():  # noqa: ANN201
    from risk_tasks.runtime import runtime

    return runtime()


@click.group()
def main() -> None:
    """Operate the risk engine: database, state, trading stops, policies, simulator."""


# -- DATABASE AND STATE --

@main.group()
def db() -> None:
    """The system of record."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
def db_upgrade(revision: str) -> None:
    """Apply the Alembic migrations."""
    import models
    from risk_tasks.settings import get_settings

    with infrastructure():
        models.migrate(get_settings().database_url, revision)
    click.echo(f"database at {revision}")


@main.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def load(path: str, as_json: bool) -> None:
    """Bulk-load a JSONL snapshot (symbol, policy, account, fill, prices lines)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from risk_tasks.loader import Loader

    with open(path, "rb") as fh:
        total = sum(1 for _ in fh)
    runtime = rt()
    with infrastructure():
        with Progress("[progress.description]{task.description}", BarColumn(),
                      MofNCompleteColumn(), TimeElapsedColumn(), console=err,
                      disable=as_json) as progress:
            task = progress.add_task(f"loading {os.path.basename(path)}", total=total)
            step = max(total // 200, 1)

            def advance(n: int) -> None:
                if n % step == 0 or n == total:
                    progress.update(task, completed=n)

            with open(path, "rb") as fh:
                report = Loader(runtime.store, runtime.sessions, advance).load(fh)
    data = report.as_dict()

    def render(d: dict) -> None:
        click.echo(f"{d['lines']} lines: {d['symbols']} symbols, {d['policies']} policies, "
                   f"{d['accounts_created']} accounts created, {d['accounts_updated']} updated, "
                   f"{d['fills']} fills, {d['price_ticks']} price ticks, "
                   f"{d['error_count']} refused")
        for e in d["errors"][:20]:
            err.print(f"  line {e['line']}: {e['field']}: {e['error']}")

    emit(data, as_json, render)
    if report.errors:
        sys.exit(EXIT_REFUSED)


@main.group()
def state() -> None:
    """The hot state in Redis."""


@state.command("rebuild")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def state_rebuild(yes: bool) -> None:
    """Rebuild Redis (accounts, positions, symbols, policies, stops) from the database."""
    from risk_tasks.recovery import rebuild_state

    if not yes:
        click.confirm("This replaces the hot state in Redis with the database's. Go on?",
                      abort=True)
    with infrastructure():
        counts = rebuild_state(rt())
    emit(counts, False, lambda d: click.echo(", ".join(f"{k}: {v}" for k, v in d.items())))


@main.command()
@click.option("--json", "as_json", is_flag=True)
def drain(as_json: bool) -> None:
    """Write waiting journal records to the database now."""
    with infrastructure():
        written = rt().drainer.drain(budget_seconds=60)
        backlog = rt().drainer.backlog()
    emit({"written": written, "backlog": backlog}, as_json,
         lambda d: click.echo(f"written {d['written']}, still waiting {d['backlog']}"))


# -- STATUS --

@main.command()
@click.option("--json", "as_json", is_flag=True)
@click.option("--timeout", default=1.0, show_default=True, help="Seconds to wait for workers.")
def status(as_json: bool, timeout: float) -> None:
    """Workers, queue depths, trading state, last tick, audit backlog."""
    from risk_tasks.app import app
    from risk_tasks.control import emergency_status
    from risk_tasks.status import system_status

    with infrastructure():
        data = system_status(rt(), app, timeout)
        data["trading"] = emergency_status(rt().store)
    data["database"] = _database_state()

    def render(d: dict) -> None:
        tr = d["trading"]
        colour = {"ACTIVE": "green", "REDUCING": "yellow", "HALTED": "red"}[tr["state"]]
        console.print(f"trading: [{colour}]{tr['state']}[/{colour}]"
                      + (f"  stop {tr['stop_id']} by {tr['by']}: {tr['reason']}"
                         if tr["state"] != "ACTIVE" else "")
                      + f"   restricted accounts: {tr['restricted_account_count']}")
        if d["workers"]:
            table([{"worker": w, "queues": ",".join(q)} for w, q in d["workers"].items()],
                  ["worker", "queues"], "workers")
        else:
            console.print(f"[red]workers: none answered within {timeout:g} s[/red]")
        table([{"queue": q, "depth": n} for q, n in d["queues"].items()], ["queue", "depth"],
              "queues")
        tick = d.get("last_tick") or {}
        console.print("last tick: " + (", ".join(f"{k}={v}" for k, v in tick.items()) or "none"))
        console.print(f"audit backlog: {d['backlog']}   price feed: {d['feed']}")
        db_ok = d["database"] == "ok"
        console.print("database: " + ("[green]ok[/green]" if db_ok
                                      else f"[red]{d['database']}[/red]"))

    emit(data, as_json, render)
    if data["database"] != "ok":
        sys.exit(EXIT_UNAVAILABLE)  # everything else was shown; scripts see the outage


def _database_state() -> str:
    """``ok``, or why the system of record cannot be reached (one line)."""
    from sqlalchemy import text
    from sqlalchemy.exc import OperationalError

    try:
        with rt().db_engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except OperationalError as exc:
        detail = " ".join(str(exc.orig or exc).split())
        return f"unreachable: {detail[:200]}"
    return "ok"


# -- TRADING STOPS --

@main.command()
@click.option("--reason", required=True)
@click.option("--by", "by", required=True, help="Who stops trading.")
@click.option("--account", default=None, help="Stop one account instead of the platform.")
@click.option("--json", "as_json", is_flag=True)
def stop(reason: str, by: str, account: str | None, as_json: bool) -> None:
    """Emergency stop: halt the platform (or one account) and start unwinding."""
    from risk_tasks.control import trigger_emergency_stop
    from risk_tasks.hooks import after_emergency_stop

    scope = "account" if account else "global"
    with infrastructure():
        result = trigger_emergency_stop(rt().store, reason, by, scope, account)
        if result["success"]:
            after_emergency_stop(rt(), result)
    emit(result, as_json, lambda d: click.echo(d["message"]))
    if not result["success"]:
        sys.exit(EXIT_REFUSED)


@main.command()
@click.option("--reason", required=True)
@click.option("--by", "by", required=True, help="Operator on RISK_OPERATORS.")
@click.option("--account", default=None, help="Resume one account instead of the platform.")
@click.option("--json", "as_json", is_flag=True)
def resume(reason: str, by: str, account: str | None, as_json: bool) -> None:
    """Resume trading (only operators on the allow-list; refusals are recorded)."""
    from risk_tasks.control import re_enable_trading

    scope = "account" if account else "global"
    with infrastructure():
        result = re_enable_trading(rt().store, by, reason, scope, account)
    emit(result, as_json, lambda d: click.echo(d["message"]))
    if not result["success"]:
        sys.exit(EXIT_REFUSED)


# -- POLICIES --

@main.group()
def policies() -> None:
    """Risk policies (stored in the database, published to every worker)."""


@policies.command("list")
@click.option("--json", "as_json", is_flag=True)
def policies_list(as_json: bool) -> None:
    from sqlalchemy import select

    from models.tables import PolicyRow
    from risk_tasks.policy_store import policy_row_dict

    with infrastructure(), rt().sessions() as session:
        rows = [policy_row_dict(r) for r in session.scalars(
            select(PolicyRow).order_by(PolicyRow.priority.desc(), PolicyRow.name))]
    emit(rows, as_json, lambda d: table(d, ["name", "type", "metric", "operator", "threshold",
                                            "scope", "scope_id", "enabled", "priority",
                                            "version"], "policies"))


def _save_policy(fields: dict, operator: str, action: str) -> dict:
    from risk_tasks.engine.validation import InvalidInput, validate_policy
    from risk_tasks.policy_store import policy_row_dict, publish_policies, save_policy

    try:
        policy = validate_policy(fields)
    except InvalidInput as exc:
        err.print(f"[red]{exc}[/red]")
        sys.exit(EXIT_REFUSED)
    runtime = rt()
    with runtime.sessions() as session, session.begin():
        row = save_policy(session, policy)
        session.flush()
        saved = policy_row_dict(row)
    publish_policies(runtime.sessions, runtime.store)
    runtime.store.journal({"t": "operator_action", "action": action, "operator": operator,
                           "allowed": True, "reason": None, "at": time.time(),
                           "details": saved})
    return saved


@policies.command("add")
@click.option("--name", required=True)
@click.option("--type", "ptype", required=True, type=click.Choice(["hard", "soft", "emergency"]))
@click.option("--metric", required=True)
@click.option("--operator", required=True)
@click.option("--threshold", required=True)
@click.option("--scope", default="account", type=click.Choice(["account", "symbol", "strategy"]))
@click.option("--scope-id", default=None)
@click.option("--priority", default=0, type=int)
@click.option("--by", "by", required=True, help="Operator making the change.")
@click.option("--json", "as_json", is_flag=True)
def policies_add(name: str, ptype: str, metric: str, operator: str, threshold: str, scope: str,
                 scope_id: str | None, priority: int, by: str, as_json: bool) -> None:
    """Add (or replace) a policy."""
    with infrastructure():
        saved = _save_policy({"name": name, "type": ptype, "metric": metric,
                              "operator": operator, "threshold": threshold, "scope": scope,
                              "scope_id": scope_id, "priority": priority}, by, "policy_add")
    emit(saved, as_json, lambda d: click.echo(f"policy {d['name']} v{d['version']} saved"))


def _existing_policy(name: str) -> dict:
    from sqlalchemy import select

    from models.tables import PolicyRow
    from risk_tasks.policy_store import policy_row_dict

    with rt().sessions() as session:
        row = session.scalar(select(PolicyRow).where(PolicyRow.name == name))
        if row is None:
            err.print(f"[red]no policy named {name!r}[/red]")
            sys.exit(EXIT_REFUSED)
        current = policy_row_dict(row)
    current.pop("id")
    return current


@policies.command("update")
@click.argument("name")
@click.option("--threshold", default=None)
@click.option("--operator", default=None)
@click.option("--type", "ptype", default=None, type=click.Choice(["hard", "soft", "emergency"]))
@click.option("--priority", default=None, type=int)
@click.option("--enable/--disable", "enabled", default=None)
@click.option("--by", "by", required=True)
@click.option("--json", "as_json", is_flag=True)
def policies_update(name: str, threshold: str | None, operator: str | None, ptype: str | None,
                    priority: int | None, enabled: bool | None, by: str, as_json: bool) -> None:
    """Change fields of a policy (its version goes up)."""
    with infrastructure():
        fields = _existing_policy(name)
        for key, value in (("threshold", threshold), ("operator", operator), ("type", ptype),
                           ("priority", priority), ("enabled", enabled)):
            if value is not None:
                fields[key] = value
        saved = _save_policy(fields, by, "policy_update")
    emit(saved, as_json, lambda d: click.echo(f"policy {d['name']} v{d['version']} saved"))


@policies.command("disable")
@click.argument("name")
@click.option("--by", "by", required=True)
@click.option("--json", "as_json", is_flag=True)
def policies_disable(name: str, by: str, as_json: bool) -> None:
    with infrastructure():
        fields = _existing_policy(name)
        fields["enabled"] = False
        saved = _save_policy(fields, by, "policy_disable")
    emit(saved, as_json, lambda d: click.echo(f"policy {d['name']} disabled"))


# -- ACCOUNTS --

@main.group()
def accounts() -> None:
    """Accounts in the hot state."""


@accounts.command("show")
@click.argument("account_id")
@click.option("--json", "as_json", is_flag=True)
def accounts_show(account_id: str, as_json: bool) -> None:
    """Metrics, positions and liquidation prices of one account."""
    from risk_tasks.accounts import account_metrics

    with infrastructure():
        data = account_metrics(rt().store, account_id)

    def render(d: dict) -> None:
        if "error" in d:
            err.print(f"[red]{d['message']}[/red]")
            return
        keys = ["status", "equity", "balance", "unrealized_pnl", "notional", "margin_used",
                "maintenance_margin", "available_margin", "margin_ratio", "leverage",
                "drawdown_daily", "drawdown_max"]
        table([{"metric": k, "value": d[k]} for k in keys], ["metric", "value"], account_id)
        table(d["positions"], ["symbol", "quantity", "entry_price", "mark_price", "notional",
                               "unrealized_pnl", "liquidation_price"], "positions")

    emit(data, as_json, render)
    if "error" in data:
        sys.exit(EXIT_REFUSED)


# -- REPORTS --

@main.command()
@click.option("--period", type=click.Choice(["hourly", "daily", "custom"]), default="hourly",
              show_default=True)
@click.option("--start", default=None,
              help="ISO 8601, UTC (2026-11-01T09:00:00Z). hourly/daily: the hour or day that "
                   "contains it (default: the last complete one). custom: required.")
@click.option("--end", default=None, help="ISO 8601, UTC, excluded. custom only.")
@click.option("--output-dir", default=None, help="Where the files go (default RISK_REPORT_DIR).")
@click.option("--json", "as_json", is_flag=True)
def report(period: str, start: str | None, end: str | None, output_dir: str | None,
           as_json: bool) -> None:
    """Build a compliance report now (HTML with charts, CSV, JSON; stored in the database)."""
    from risk_tasks.reports import ReportError, build_report

    runtime = rt()
    try:
        with infrastructure():
            result = build_report(runtime.sessions, output_dir or runtime.settings.report_dir,
                                  period, start, end)
    except ReportError as exc:
        err.print(f"[red]{exc}[/red]")
        sys.exit(2)

    def render(d: dict) -> None:
        console.print(f"compliance report #{d['report_id']}: {d['period']} "
                      f"{d['start']} to {d['end']}")
        keys = ["order_checks", "rejected", "p99_us", "violations", "liquidations",
                "emergency_stops", "operator_actions", "dead_letters"]
        table([{"figure": k, "value": d[k]} for k in keys], ["figure", "value"])
        for kind, path in d["paths"].items():
            console.print(f"  {kind:4} {path}")

    emit(result, as_json, render)


# -- RUNNING --

@main.command()
@click.argument("role", type=click.Choice(list(ROLES)))
@click.option("--concurrency", "-c", type=int, default=None)
@click.option("--name", default=None, help="Worker node name (default: the role).")
def worker(role: str, concurrency: int | None, name: str | None) -> None:
    """Start a worker of a role with its tuned command line (replaces this process)."""
    from risk_tasks.roles import worker_command

    command = worker_command(role, name=name, concurrency=concurrency)
    os.environ.update(ROLES[role].env)
    os.execvp(command[0], command)


@main.command()
@click.option("--accounts", "n_accounts", default=2000, show_default=True)
@click.option("--symbols", "n_symbols", default=50, show_default=True)
@click.option("--rate", default=50.0, show_default=True, help="check_order calls per second.")
@click.option("--duration", default=3600.0, show_default=True, help="Seconds to run.")
@click.option("--flower-port", default=5555, show_default=True)
@click.option("--no-flower", is_flag=True)
@click.option("--seed", "seed_value", default=7, show_default=True)
def run(n_accounts: int, n_symbols: int, rate: float, duration: float, flower_port: int,
        no_flower: bool, seed_value: int) -> None:
    """The whole system on this machine: workers, beat, Flower and the simulator."""
    from risk_tasks.launcher import run_system

    with infrastructure():
        code = run_system(n_accounts, n_symbols, rate, duration, flower_port, not no_flower,
                          seed_value, click.echo)
    sys.exit(code)


@main.command()
@click.option("--accounts", "n_accounts", default=1000, show_default=True)
@click.option("--symbols", "n_symbols", default=50, show_default=True)
@click.option("--rate", default=20.0, show_default=True, help="check_order calls per second.")
@click.option("--duration", default=60.0, show_default=True)
@click.option("--seed", "seed_value", default=7, show_default=True)
@click.option("--write", "write_path", default=None,
              help="Only write the snapshot as JSONL for `riskctl load`, do not run.")
def simulate(n_accounts: int, n_symbols: int, rate: float, duration: float, seed_value: int,
             write_path: str | None) -> None:
    """Drive running workers with a simulated market and order flow (or write a snapshot)."""
    from risk_tasks.app import app
    from risk_tasks.launcher import live_line, seed
    from risk_tasks.simulator import Market, Simulation, population, symbol_names, symbol_specs

    if write_path:
        from rich.progress import Progress

        market = Market(symbol_names(n_symbols), seed=seed_value)
        with open(write_path, "wb") as out, Progress(console=err) as progress:
            task = progress.add_task("writing snapshot", total=n_accounts)
            for spec in symbol_specs(market.names):
                out.write(orjson.dumps({"type": "symbol", "symbol": spec.symbol,
                                        "imr": str(spec.imr), "mmr": str(spec.mmr),
                                        "price_collar": str(spec.price_collar),
                                        "max_order_notional": str(spec.max_order_notional)}) + b"\n")
            out.write(orjson.dumps({"type": "prices", "ts": time.time(),
                                    "prices": {k: str(v) for k, v in market.marks().items()}})
                      + b"\n")
            for i, (account, fills) in enumerate(population(n_accounts, market, seed=seed_value)):
                out.write(orjson.dumps({"type": "account", "account_id": account["account_id"],
                                        "balance": str(account["balance"])}) + b"\n")
                for f in fills:
                    out.write(orjson.dumps({"type": "fill", "fill_id": f.fill_id,
                                            "account_id": f.account_id, "symbol": f.symbol,
                                            "side": f.side.value, "quantity": str(f.quantity),
                                            "price": str(f.price)}) + b"\n")
                if i % 1000 == 0:
                    progress.update(task, completed=i)
            progress.update(task, completed=n_accounts)
        click.echo(f"wrote {write_path}")
        return
    runtime = rt()
    with infrastructure():
        market = seed(runtime, n_accounts, n_symbols, seed_value, click.echo)
        ids = list(runtime.store.iter_account_ids())[:n_accounts]
        final = Simulation(app, market, ids, rate=rate).run(
            duration, report=lambda s: click.echo(live_line(runtime, s)))
    click.echo("final: " + live_line(runtime, final))


# -- DEAD LETTERS --

@main.group()
def dlq() -> None:
    """Dead-lettered tasks: list, show, replay, purge."""


def _operator(by: str | None) -> str:
    return by or os.environ.get("USER") or "operator"


@dlq.command("list")
@click.option("--status", default="dead", show_default=True,
              type=click.Choice(["dead", "replayed", "purged", "all"]))
@click.option("--task", "task_name", default=None, help="Only this task name.")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--json", "as_json", is_flag=True)
def dlq_list(status: str, task_name: str | None, limit: int, as_json: bool) -> None:
    """Dead letters, newest first."""
    from risk_tasks import dlq as dead_letters

    with infrastructure():
        rows = dead_letters.list_dead_letters(rt().sessions, None if status == "all" else status,
                                              task_name, limit)
    emit(rows, as_json, lambda d: table(d, ["id", "dead_letter_id", "task_name",
                                            "idempotency_key", "attempts", "status",
                                            "created_at", "error"],
                                        f"dead letters ({status})"))


@dlq.command("show")
@click.argument("ident")
@click.option("--json", "as_json", is_flag=True)
def dlq_show(ident: str, as_json: bool) -> None:
    """One dead letter in full: arguments, error, traceback (IDENT: row id or dead_letter_id)."""
    from risk_tasks import dlq as dead_letters

    with infrastructure():
        try:
            data = dead_letters.show(rt().sessions, ident)
        except dead_letters.DeadLetterError as exc:
            err.print(f"[red]{exc}[/red]")
            sys.exit(EXIT_REFUSED)

    def render(d: dict) -> None:
        for key in ("id", "dead_letter_id", "task_name", "task_id", "idempotency_key",
                    "attempts", "status", "created_at", "replayed_at", "replayed_by",
                    "replay_task_id"):
            console.print(f"[bold]{key}[/bold]: {d.get(key)}")
        console.print(f"[bold]args[/bold]: {orjson.dumps(d['args']).decode()}")
        console.print(f"[bold]kwargs[/bold]: {orjson.dumps(d['kwargs']).decode()}")
        console.print(f"[bold]error[/bold]: {d['error']}")
        if d.get("traceback"):
            console.print(d["traceback"], markup=False, highlight=False)

    emit(data, as_json, render)


@dlq.command("replay")
@click.argument("idents", nargs=-1, required=True)
@click.option("--by", "by", default=None, help="Operator replaying (default: $USER).")
@click.option("--force", is_flag=True, help="Replay a letter already replayed or purged.")
@click.option("--json", "as_json", is_flag=True)
def dlq_replay(idents: tuple[str, ...], by: str | None, force: bool, as_json: bool) -> None:
    """Send dead-lettered tasks again with their original arguments."""
    from risk_tasks import dlq as dead_letters
    from risk_tasks.app import app

    done, refused = [], []
    with infrastructure():
        runtime = rt()
        for ident in idents:
            try:
                done.append(dead_letters.replay(runtime.sessions, app, runtime.redis, ident,
                                                _operator(by), force=force))
            except dead_letters.DeadLetterError as exc:
                refused.append({"ident": ident, "error": str(exc)})
    emit({"replayed": done, "refused": refused}, as_json, lambda d: (
        table(d["replayed"], ["id", "dead_letter_id", "task_name", "replay_task_id"],
              "replayed"),
        [err.print(f"[red]{r['ident']}: {r['error']}[/red]") for r in d["refused"]]))
    if refused:
        sys.exit(EXIT_REFUSED)


@dlq.command("purge")
@click.argument("idents", nargs=-1)
@click.option("--all", "all_dead", is_flag=True, help="Every dead letter still 'dead'.")
@click.option("--by", "by", default=None, help="Operator purging (default: $USER).")
@click.option("--json", "as_json", is_flag=True)
def dlq_purge(idents: tuple[str, ...], all_dead: bool, by: str | None, as_json: bool) -> None:
    """Mark dead letters purged (they stay in the table for the audit trail)."""
    from risk_tasks import dlq as dead_letters

    if bool(idents) == all_dead:
        raise click.UsageError("give dead letter ids, or --all")
    with infrastructure():
        try:
            count = dead_letters.purge(rt().sessions, list(idents), _operator(by), all_dead)
        except dead_letters.DeadLetterError as exc:
            err.print(f"[red]{exc}[/red]")
            sys.exit(EXIT_REFUSED)
    emit({"purged": count}, as_json, lambda d: click.echo(f"purged {d['purged']}"))


if __name__ == "__main__":
    main()
