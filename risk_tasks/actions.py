"""Liquidation and unwinding of one account: steps, progress and records.

The tasks in ``risk_tasks/tasks/liquidation.py`` and ``unwind.py`` only validate their
arguments and call ``Liquidation(...).run()`` or ``Unwind(...).run()``; everything that
makes an action safe to repeat lives here.

**Never doubled.** An action is keyed by its business id (the liquidation's
``episode_id``; the unwind's ``(stop_id, account_id)``) and keeps its progress in Redis
(``risk:action:...``, kept ``RISK_ACTION_PROGRESS_TTL_SECONDS``). Each run:

1. returns the stored result at once if the action already finished;
2. takes the per-account lease (``risk_tasks.leases``; liquidation and unwind share it),
   then reads its progress again, under the lease;
3. cancels the account's open orders, once per action;
4. settles an order that was in flight when an earlier run stopped (the progress names
   it *before* it is sent, ``pending``): the gateway's ``lookup`` says whether it was
   executed; if so the fill is applied (a no-op if it already was) and the step
   recorded, if not it is forgotten;
5. re-reads the positions before every close, plans again from them, and sends each
   order under a request id deterministic per (action, symbol, step), which is also
   the fill id, so the venue executes it once and the state store applies it once;
6. records each step in the progress and in the journal in one Redis transaction.

A run killed at any point (SIGKILL, a lost lease, a time limit) leaves either no trace
of a step or a ``pending`` one that the next run settles. Nothing is closed twice.

**Liquidation** (DESIGN.md): whole positions, largest notional first, re-planned with
``plan_liquidation`` after every fill, until ``equity >= remaining notional * imr``
(everything when ``equity <= 0``). An episode whose account is no longer liquidatable
when it first runs (prices recovered, or an unwind closed everything first) is
``skipped``. The episode guard of the monitor (``risk_tasks.episodes``) is kept alive
while it runs and ended when it completes.

**Unwinding** (after an emergency stop): cancel orders, then close every position in
slices of ``RISK_UNWIND_SLICE_FRACTION`` of its size when first seen, one slice of each
position per round (largest notional first), pausing ``RISK_UNWIND_PAUSE_SECONDS``
between rounds. Progress goes to the stop as ``estop_progress`` records; the stop is
completed when every account it listed (``expect_unwinds``) has finished.

Fills at mark do not move equity (the unrealised PnL becomes realised), so liquidation
equity after equals equity before at unchanged marks.
"""

from __future__ import annotations

import hashlib
import logging
import time
from decimal import Decimal
from typing import Any, Callable, Mapping

import orjson
import redis

from risk_tasks import alerting, episodes
from risk_tasks.engine.liquidation import plan_liquidation
from risk_tasks.engine.metrics import compute_metrics, is_liquidatable
from risk_tasks.engine.model import ZERO, Account, Metrics, Position, Side, SymbolSpec
from risk_tasks.engine.positions import apply_fill
from risk_tasks.engine.validation import InvalidInput, identifier
from risk_tasks.failures import BadInput, NoPrice, PermanentError
from risk_tasks.gateways.base import Execution, ExecutionGateway
from risk_tasks.leases import AccountLease
from risk_tasks.logs import log_event
from risk_tasks.metrics import LIQUIDATIONS
from risk_tasks.state import keys
from risk_tasks.state.codec import decode_mark

log = logging.getLogger(__name__)

RUNNING, COMPLETED, SKIPPED = "running", "completed", "skipped"
FINAL = (COMPLETED, SKIPPED)
MAX_STEPS = 500  # a venue that keeps filling ever smaller parts cannot loop for ever
MAX_REASON = 1000
MAX_REQUEST_ID = 150  # fills.fill_id holds 160

Notify = Callable[[dict], Any]  # sends an alert (risk.send_alert)


# -- KEYS AND IDS --

def liquidation_key(episode_id: str) -> str:
    return f"risk:action:liq:{episode_id}"


def unwind_key(stop_id: str, account_id: str) -> str:
    return f"risk:action:unwind:{len(stop_id)}:{stop_id}:{account_id}"


def stop_keys(stop_id: str) -> tuple[str, str, str]:
    """(accounts finished, accounts expected, completion flag) of a stop."""
    base = f"risk:unwind:{stop_id}"
    return f"{base}:done", f"{base}:expected", f"{base}:completed"


def request_id(*parts: str) -> str:
    """The deterministic order (and fill) id of one step; at most 150 characters."""
    raw = ":".join(parts)
    if len(raw) <= MAX_REQUEST_ID:
        return raw
    return f"{parts[0][:60]}:{hashlib.sha1(raw.encode()).hexdigest()}"


def liquidation_alert_id(episode_id: str) -> str:
    """One alert id per episode, so a repeated completion cannot alert twice."""
    return "liq-" + hashlib.sha1(episode_id.encode()).hexdigest()[:32]


# -- INPUT --

def validate_liquidation(account_id: Any, reason: Any, episode_id: Any) -> tuple[str, str, str]:
    try:
        account = identifier({"account_id": account_id}, "account_id")
        episode = identifier({"episode_id": episode_id}, "episode_id")
    except InvalidInput as exc:
        raise BadInput(str(exc)) from exc
    if not isinstance(reason, str) or not reason.strip():
        raise BadInput("reason: is required (a non-empty string)")
    return account, reason.strip()[:MAX_REASON], episode


def validate_unwind(account_id: Any, stop_id: Any) -> tuple[str, str]:
    try:
        return (identifier({"account_id": account_id}, "account_id"),
                identifier({"stop_id": stop_id}, "stop_id", max_length=64))
    except InvalidInput as exc:
        raise BadInput(str(exc)) from exc


# -- PROGRESS --

class Progress:
    """One action's progress: a JSON document in Redis, saved with its journal records
    in one transaction (so PostgreSQL gets each step exactly when Redis records it)."""

    def __init__(self, client: redis.Redis, key: str, ttl_seconds: int) -> None:
        self.redis = client
        self.key = key
        self.ttl = ttl_seconds

    def load(self) -> dict | None:
        raw = self.redis.get(self.key)
        return None if raw is None else orjson.loads(raw)

    def save(self, data: dict, records: tuple[dict, ...] | list[dict] = ()) -> None:
        pipe = self.redis.pipeline(transaction=True)
        pipe.set(self.key, orjson.dumps(data), ex=self.ttl)
        for record in records:
            pipe.xadd(keys.JOURNAL_STREAM, {"d": orjson.dumps(record)})
        pipe.execute()


# -- SHARED STEPS --

class AccountAction:
    """What liquidation and unwinding share: the lease, orders first, closes that are
    announced before they are sent and settled after."""

    source = "?"

    def __init__(self, rt, gateway: ExecutionGateway, account_id: str, reference: str,  # noqa: ANN001
                 key: str, holder: str) -> None:
        self.rt = rt
        self.store = rt.store
        self.redis = rt.redis
        self.settings = rt.settings
        self.gateway = gateway
        self.account_id = account_id
        self.reference = reference
        # Prefix of order (and fill) ids: unique per action *and* account.
        self.order_prefix = reference
        self.progress = Progress(rt.redis, key, rt.settings.action_progress_ttl_seconds)
        self.lease = AccountLease(rt.redis, account_id, rt.settings.lease_ttl_seconds,
                                  rt.settings.lease_wait_seconds, holder)

    def now(self) -> float:
        return self.rt.clock.time()

    # -- hooks of the two actions --

    def step_records(self, data: dict, step: dict) -> list[dict]:
        raise NotImplementedError

    def cancel_records(self, data: dict, canceled: int) -> list[dict]:
        raise NotImplementedError

    def on_step(self, data: dict, step: dict) -> None:
        """Update the progress for a finished step (before it is saved)."""

    def touch(self) -> None:
        """Keep the lease (and whatever else must stay alive) fresh before a venue call."""
        self.lease.renew()

    # -- state --

    def read(self) -> Account:
        account, _ = self.store.read_account(self.account_id)
        if account is None:
            raise BadInput(f"account_id: unknown account {self.account_id}")
        return account

    def pricing(self, positions: Mapping[str, Position],
                require: bool = True) -> tuple[dict[str, Decimal], dict[str, SymbolSpec]]:
        """Marks and specs of the held symbols (a symbol without a spec counts at 100 %
        margin, as in the monitor). ``NoPrice`` when a mark is missing and required."""
        symbols = sorted(positions)
        specs = dict(self.store.current_config().specs)
        for symbol in symbols:
            specs.setdefault(symbol, SymbolSpec(symbol, Decimal(1), Decimal(1)))
        raw = self.redis.hmget(keys.PRICES, symbols) if symbols else []
        marks: dict[str, Decimal] = {}
        for symbol, value in zip(symbols, raw):
            mark = decode_mark(value)
            if mark is not None:
                marks[symbol] = mark.price
            elif require:
                raise NoPrice(f"no mark price for {symbol} held by {self.account_id}")
        return marks, specs

    def metrics(self, account: Account) -> Metrics:
        marks, specs = self.pricing(account.positions)
        return compute_metrics(account.balance, account.positions, marks, specs,
                               account.peak_equity, account.daily_start_equity)

    # -- steps --

    def cancel_orders(self, data: dict) -> None:
        """Cancel the account's open orders, once per action (repeating it is harmless)."""
        if data.get("orders_canceled") is not None:
            return
        self.touch()
        canceled = self.gateway.cancel_all_orders(self.account_id,
                                                  request_id(self.order_prefix, "cancel"))
        data["orders_canceled"] = canceled
        self.progress.save(data, self.cancel_records(data, canceled))

    def settle_pending(self, data: dict) -> None:
        """Finish or forget the order that was in flight when an earlier run stopped."""
        pending = data.get("pending")
        if not pending:
            return
        self.touch()
        execution = self.gateway.lookup(pending["request_id"], self.account_id)
        if execution is None:
            # Never executed. Planning again from the positions as they are now sends
            # the same request id if it picks the same symbol (the step is unchanged).
            log_event(log, "in-flight order was not executed", account_id=self.account_id,
                      reference=self.reference, request_id=pending["request_id"])
            data["pending"] = None
            self.progress.save(data)
            return
        log_event(log, "in-flight order was executed; settling it",
                  account_id=self.account_id, reference=self.reference,
                  request_id=pending["request_id"])
        self.gateway.apply(execution, self.source, self.reference)
        self.complete(data, execution)

    def close(self, data: dict, symbol: str, position: Position, quantity: Decimal) -> dict:
        """Close ``quantity`` of ``position``: announce, send, apply, record."""
        if len(data["steps"]) >= MAX_STEPS:
            raise PermanentError(f"{self.reference}: more than {MAX_STEPS} steps, giving up")
        step = data["next_step"]
        side = Side.SELL if position.quantity > 0 else Side.BUY
        rid = request_id(self.order_prefix, symbol, str(step))
        data["pending"] = {"step": step, "symbol": symbol, "side": side.value,
                           "quantity": str(quantity), "request_id": rid,
                           "position_quantity": str(position.quantity),
                           "entry_price": str(position.entry_price)}
        self.progress.save(data)
        self.touch()
        execution = self.gateway.close_position(self.account_id, symbol, side, quantity, rid,
                                                self.source, self.reference)
        return self.complete(data, execution)

    def complete(self, data: dict, execution: Execution) -> dict:
        pending = data["pending"]
        before = Position(pending["symbol"], Decimal(pending["position_quantity"]),
                          Decimal(pending["entry_price"]))
        signed = execution.quantity if execution.side is Side.BUY else -execution.quantity
        after, realized = apply_fill(before, before.symbol, signed, execution.price)
        step = {"step": pending["step"], "symbol": execution.symbol,
                "side": execution.side.value, "quantity": str(execution.quantity),
                "price": str(execution.price), "realized_pnl": str(realized),
                "flat": not after.quantity, "request_id": execution.request_id,
                "at": self.now()}
        data["pending"] = None
        data["steps"].append(step)
        data["next_step"] = pending["step"] + 1
        self.on_step(data, step)
        self.progress.save(data, self.step_records(data, step))
        log_event(log, f"{self.source} step", account_id=self.account_id,
                  reference=self.reference, symbol=step["symbol"], side=step["side"],
                  quantity=step["quantity"], price=step["price"], step=step["step"])
        return step


def realized_total(data: dict) -> Decimal:
    return sum((Decimal(s["realized_pnl"]) for s in data["steps"]), ZERO)


# -- LIQUIDATION --

class Liquidation(AccountAction):
    """One liquidation episode of one account (see the module docstring)."""

    source = "liquidation"

    def __init__(self, rt, gateway: ExecutionGateway, account_id: str, reason: str,  # noqa: ANN001
                 episode_id: str, notify: Notify, holder: str = "liquidation") -> None:
        super().__init__(rt, gateway, account_id, episode_id, liquidation_key(episode_id),
                         holder)
        self.reason = reason
        self.episode_id = episode_id
        self.notify = notify

    def run(self) -> dict:
        data = self.progress.load()
        if data is not None and data["status"] in FINAL:
            return self.result(data, duplicate=True)
        with self.lease:
            data = self.progress.load()
            if data is not None and data["status"] in FINAL:
                return self.result(data, duplicate=True)
            account = self.read()
            if data is None:
                data = self.begin(account)
                if data["status"] == SKIPPED:
                    return self.result(data)
            else:
                data["attempts"] += 1
                data["status"] = RUNNING
                self.progress.save(data, [self.record(data, RUNNING)])
            self.cancel_orders(data)
            self.settle_pending(data)
            while True:
                account = self.read()
                marks, specs = self.pricing(account.positions)
                plan = plan_liquidation(account.balance, account.positions, marks, specs)
                if not plan:
                    break
                symbol = plan[0]
                position = account.positions[symbol]
                self.close(data, symbol, position, abs(position.quantity))
            return self.finish(data, account, marks, specs)

    def begin(self, account: Account) -> dict:
        now = self.now()
        metrics = self.metrics(account)
        data = {"kind": "liquidation", "episode_id": self.episode_id,
                "account_id": self.account_id, "reason": self.reason, "status": RUNNING,
                "attempts": 1, "started_at": now, "next_step": 1, "steps": [],
                "pending": None, "orders_canceled": None,
                "equity_before": str(metrics.equity),
                "maintenance_before": str(metrics.maintenance_margin)}
        if not is_liquidatable(metrics):
            # Prices moved back, or an unwind closed the positions first: nothing to do.
            data.update(status=SKIPPED, completed_at=now, equity_after=str(metrics.equity))
            self.progress.save(data, [self.record(data, SKIPPED, equity_after=str(metrics.equity),
                                                  completed_at=now,
                                                  error="not liquidatable when the "
                                                        "liquidation ran")])
            episodes.end(self.redis, self.account_id, self.episode_id)
            LIQUIDATIONS.labels(SKIPPED).inc()
            log_event(log, "liquidation skipped: account not liquidatable",
                      account_id=self.account_id, episode_id=self.episode_id,
                      equity=str(metrics.equity),
                      maintenance=str(metrics.maintenance_margin))
            return data
        self.progress.save(data, [self.record(data, "started")])
        LIQUIDATIONS.labels("started").inc()
        log_event(log, "liquidation started", logging.WARNING, account_id=self.account_id,
                  episode_id=self.episode_id, reason=self.reason,
                  equity=str(metrics.equity), maintenance=str(metrics.maintenance_margin))
        return data

    def touch(self) -> None:
        super().touch()
        episodes.extend(self.redis, self.account_id, self.episode_id)

    def finish(self, data: dict, account: Account, marks: dict, specs: dict) -> dict:
        now = self.now()
        metrics = compute_metrics(account.balance, account.positions, marks, specs,
                                  account.peak_equity, account.daily_start_equity)
        realized = realized_total(data)
        data.update(status=COMPLETED, completed_at=now, equity_after=str(metrics.equity),
                    realized_pnl=str(realized))
        closed = [s["symbol"] for s in data["steps"]]
        # The alert goes first, under an id of this episode: if this run dies before the
        # completion is saved, the next one sends the same alert, delivered once.
        self.notify(alerting.make_alert(
            "critical", "liquidation",
            f"{self.account_id}: liquidated ({self.reason}); closed "
            f"{', '.join(closed) or 'nothing'}, realised PnL {realized:.2f}",
            account_id=self.account_id, at=now,
            details={"episode_id": self.episode_id, "positions_closed": closed,
                     "equity_before": data["equity_before"],
                     "equity_after": data["equity_after"],
                     "orders_canceled": data["orders_canceled"]})
            | {"alert_id": liquidation_alert_id(self.episode_id)})
        self.progress.save(data, [self.record(
            data, COMPLETED, equity_after=data["equity_after"], realized_pnl=str(realized),
            positions_closed=self.closed_positions(data), completed_at=now)])
        episodes.end(self.redis, self.account_id, self.episode_id)
        LIQUIDATIONS.labels(COMPLETED).inc()
        log_event(log, "liquidation completed", logging.WARNING, account_id=self.account_id,
                  episode_id=self.episode_id, positions_closed=closed,
                  realized_pnl=str(realized), attempts=data["attempts"])
        return self.result(data)

    @staticmethod
    def closed_positions(data: dict) -> list[dict]:
        return [{k: s[k] for k in ("step", "symbol", "side", "quantity", "price",
                                   "realized_pnl")} for s in data["steps"]]

    # -- records --

    def record(self, data: dict, status: str, **extra: Any) -> dict:
        return {"t": "liquidation", "episode_id": self.episode_id,
                "account_id": self.account_id, "reason": self.reason, "status": status,
                "started_at": data["started_at"], "attempts": data["attempts"],
                "equity_before": data.get("equity_before"),
                "maintenance_before": data.get("maintenance_before"),
                "orders_canceled": data.get("orders_canceled"), "at": self.now(), **extra}

    def cancel_records(self, data: dict, canceled: int) -> list[dict]:
        return [{"t": "liquidation_step", "episode_id": self.episode_id, "step": 0,
                 "action": "cancel_orders", "symbol": None, "quantity": str(canceled),
                 "price": None, "realized_pnl": None, "at": self.now()}]

    def step_records(self, data: dict, step: dict) -> list[dict]:
        return [{"t": "liquidation_step", "episode_id": self.episode_id, "step": step["step"],
                 "action": "close_position", "symbol": step["symbol"],
                 "quantity": step["quantity"], "price": step["price"],
                 "realized_pnl": step["realized_pnl"], "at": step["at"]}]

    def result(self, data: dict, duplicate: bool = False) -> dict:
        return {"ok": True, "episode_id": self.episode_id, "account_id": self.account_id,
                "status": data["status"], "duplicate": duplicate,
                "positions_closed": [s["symbol"] for s in data["steps"]],
                "orders_canceled": data.get("orders_canceled") or 0,
                "realized_pnl": float(realized_total(data)),
                "equity_before": data.get("equity_before"),
                "equity_after": data.get("equity_after"), "attempts": data["attempts"]}


def liquidation_failed(rt, account_id: Any, reason: Any, episode_id: Any,  # noqa: ANN001
                       error: str) -> None:
    """Record a dead-lettered episode as failed (the progress stays as it was, so a
    replay resumes where it stopped). Input that is itself bad has no episode."""
    try:
        account, reason, episode = validate_liquidation(account_id, reason, episode_id)
    except BadInput:
        return
    data = Progress(rt.redis, liquidation_key(episode), 1).load() or {}
    if data.get("status") in FINAL:
        return
    now = rt.clock.time()
    rt.store.journal({"t": "liquidation", "episode_id": episode, "account_id": account,
                      "reason": reason, "status": "failed",
                      "started_at": data.get("started_at", now),
                      "attempts": data.get("attempts", 1), "error": error[:4000],
                      "at": now})
    LIQUIDATIONS.labels("failed").inc()


# -- UNWIND --

_SETTLE_STOP = """
-- KEYS: done set, expected count, completion flag, journal
-- ARGV: account id ('' when only setting the expectation), account record,
--       expected count ('' to keep), ttl, stop completion record
if ARGV[3] ~= '' then redis.call('SET', KEYS[2], ARGV[3], 'EX', ARGV[4]) end
if ARGV[1] ~= '' then
  if redis.call('SADD', KEYS[1], ARGV[1]) == 1 then
    redis.call('XADD', KEYS[4], '*', 'd', ARGV[2])
  end
  redis.call('EXPIRE', KEYS[1], ARGV[4])
end
local expected = redis.call('GET', KEYS[2])
if expected and redis.call('SCARD', KEYS[1]) >= tonumber(expected) then
  if redis.call('SET', KEYS[3], '1', 'NX', 'EX', ARGV[4]) then
    redis.call('XADD', KEYS[4], '*', 'd', ARGV[5])
    return 1
  end
end
return 0
"""


def settle_stop(client: redis.Redis, stop_id: str, ttl: int, now: float,
                account_id: str = "", expected: int | None = None) -> bool:
    """Count an account as unwound (and/or set how many the stop expects); journal the
    stop's completion when every expected account is done. True when it completed now."""
    done, expected_key, flag = stop_keys(stop_id)
    account_record = orjson.dumps({"t": "estop_progress", "stop_id": stop_id,
                                   "account_id": account_id, "account_completed": True,
                                   "at": now})
    stop_record = orjson.dumps({"t": "estop_progress", "stop_id": stop_id,
                                "completed": True, "at": now})
    return bool(client.eval(_SETTLE_STOP, 4, done, expected_key, flag, keys.JOURNAL_STREAM,
                            account_id, account_record,
                            "" if expected is None else str(int(expected)), int(ttl),
                            stop_record))


_COUNT_SHARD = """
-- KEYS: accounts listed for this shard, expected count, journal
-- ARGV: accounts (JSON list), how many, ttl, expectation record
local listed = redis.call('GET', KEYS[1])
if listed then return listed end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3])
redis.call('INCRBY', KEYS[2], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[3])
redis.call('XADD', KEYS[3], '*', 'd', ARGV[4])
return ARGV[1]
"""


def shard_marker(shard: int) -> str:
    """How a shard of a global stop counts itself in the stop's done set."""
    return f"shard:{shard}"


def count_shard(rt, stop_id: str, shard: int, account_ids: list[str]) -> list[str]:  # noqa: ANN001
    """Add a shard's accounts to what a global stop waits for, once: the first call
    lists them (and journals the count), a repeat (a redelivered ``risk.unwind_shard``)
    gets the first list back, so the count never grows twice and no account listed
    first is forgotten. Returns the accounts to unwind."""
    _, expected_key, _ = stop_keys(stop_id)
    record = orjson.dumps({"t": "estop_expected", "stop_id": stop_id, "shard": shard,
                           "accounts": len(account_ids), "at": rt.clock.time()})
    listed = rt.redis.eval(_COUNT_SHARD, 3, f"risk:unwind:{stop_id}:shard:{shard}",
                           expected_key, keys.JOURNAL_STREAM, orjson.dumps(account_ids),
                           len(account_ids), rt.settings.action_progress_ttl_seconds, record)
    return orjson.loads(listed)


def shard_counted(rt, stop_id: str, shard: int) -> bool:  # noqa: ANN001
    """Count a shard of a global stop as listed and sent (its marker in the done set);
    True when this completed the stop."""
    return settle_stop(rt.redis, stop_id, rt.settings.action_progress_ttl_seconds,
                       rt.clock.time(), account_id=shard_marker(shard))


def expect_unwinds(rt, stop_id: str, accounts: int) -> bool:  # noqa: ANN001
    """Tell a stop how many account unwinds it waits for (called before they are sent);
    a stop with none is complete at once. True when it completed now."""
    return settle_stop(rt.redis, stop_id, rt.settings.action_progress_ttl_seconds,
                       rt.clock.time(), expected=accounts)


class Unwind(AccountAction):
    """The unwind of one account after emergency stop ``stop_id``."""

    source = "unwind"

    def __init__(self, rt, gateway: ExecutionGateway, account_id: str, stop_id: str,  # noqa: ANN001
                 holder: str = "unwind", sleep: Callable[[float], None] = time.sleep) -> None:
        super().__init__(rt, gateway, account_id, stop_id, unwind_key(stop_id, account_id),
                         holder)
        self.stop_id = stop_id
        self.order_prefix = f"{stop_id}:{account_id}"  # one stop unwinds many accounts
        self.fraction = Decimal(repr(rt.settings.unwind_slice_fraction))
        self.pause_seconds = rt.settings.unwind_pause_seconds
        self.sleep = sleep

    def run(self) -> dict:
        data = self.progress.load()
        if data is not None and data["status"] in FINAL:
            return self.result(data, duplicate=True)
        with self.lease:
            data = self.progress.load()
            if data is not None and data["status"] in FINAL:
                return self.result(data, duplicate=True)
            self.read()  # an unknown account is bad input
            if data is None:
                data = {"kind": "unwind", "stop_id": self.stop_id,
                        "account_id": self.account_id, "status": RUNNING, "attempts": 1,
                        "started_at": self.now(), "next_step": 1, "steps": [],
                        "pending": None, "orders_canceled": None, "sizes": {}, "round": 1,
                        "round_done": []}
                log_event(log, "unwind started", logging.WARNING, account_id=self.account_id,
                          stop_id=self.stop_id)
            else:
                data["attempts"] += 1
            self.progress.save(data)
            self.cancel_orders(data)
            self.settle_pending(data)
            while True:
                account = self.read()
                held = {s: p for s, p in account.positions.items() if p.quantity}
                if not held:
                    break
                todo = [s for s in held if s not in data["round_done"]]
                if not todo:
                    self.pause()
                    data["round"] += 1
                    data["round_done"] = []
                    self.progress.save(data)
                    continue
                marks, _ = self.pricing({s: held[s] for s in todo}, require=False)
                symbol = min(todo, key=lambda s: (
                    -abs(held[s].quantity) * marks.get(s, held[s].entry_price), s))
                position = held[symbol]
                size = Decimal(data["sizes"].setdefault(symbol, str(abs(position.quantity))))
                quantity = min(abs(position.quantity), size * self.fraction)
                self.close(data, symbol, position, quantity)
            return self.finish(data)

    def pause(self) -> None:
        """Wait between rounds of slices, keeping the lease."""
        end = time.monotonic() + self.pause_seconds
        while (left := end - time.monotonic()) > 0:
            self.sleep(min(left, self.settings.lease_ttl_seconds / 3))
            self.lease.renew()

    def on_step(self, data: dict, step: dict) -> None:
        data["round_done"].append(step["symbol"])

    def finish(self, data: dict) -> dict:
        now = self.now()
        data.update(status=COMPLETED, completed_at=now)
        self.progress.save(data)
        completed = settle_stop(self.redis, self.stop_id, self.progress.ttl, now,
                                account_id=self.account_id)
        log_event(log, "unwind completed", logging.WARNING, account_id=self.account_id,
                  stop_id=self.stop_id, positions_closed=sum(s["flat"] for s in data["steps"]),
                  slices=len(data["steps"]), stop_completed=completed)
        return self.result(data)

    def cancel_records(self, data: dict, canceled: int) -> list[dict]:
        if not canceled:
            return []
        return [{"t": "estop_progress", "stop_id": self.stop_id, "account_id": self.account_id,
                 "orders_canceled": canceled, "at": self.now()}]

    def step_records(self, data: dict, step: dict) -> list[dict]:
        if not step["flat"]:
            return []  # a slice: the fill (source "unwind", reference the stop) records it
        return [{"t": "estop_progress", "stop_id": self.stop_id, "account_id": self.account_id,
                 "positions_closed": 1, "symbol": step["symbol"], "at": step["at"]}]

    def result(self, data: dict, duplicate: bool = False) -> dict:
        return {"ok": True, "stop_id": self.stop_id, "account_id": self.account_id,
                "status": data["status"], "duplicate": duplicate,
                "orders_canceled": data.get("orders_canceled") or 0,
                "positions_closed": sum(1 for s in data["steps"] if s["flat"]),
                "slices": len(data["steps"]), "attempts": data["attempts"],
                "realized_pnl": float(realized_total(data))}
