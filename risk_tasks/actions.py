"""Liquidation and unwinding of one account: steps, progress and records.

The tasks in ``risk_tasks/tasks/liquidation.py`` and ``unwind.py`` only validate their
arguments and call ``Liquidation(...).run()`` or ``Unwind(...).run()``; everything that
makes an action safe to repeat lives here.

**Never doubled.** An action is keyed by its business id (the liquidation's
``episode_id``; the unwind's ``(stop_id, account_id)``) and keeps its progress in Redis
(``risk:action:...``, kept ``RISK_ACTION_PROGRESS_TTL_SECONDS``). Each run:

1. takes the per-account lease (``risk_tasks.leases``; liquidation and unwind share it)
   and, in the same step (one Lua script, one round trip), reads its progress, the
   account, its positions and their marks; a finished action returns its stored result
   at once (lease or not, and keeps no lease);
2. cancels the account's open orders, once per action, and records the start (with the
   paper gateway, which cancels nothing and changes nothing before a close, both are
   written by the run's first close, in its script's step, or by its next save);
3. settles an order that was in flight when an earlier run stopped (the progress names
   it *before* it is sent, ``pending``): the gateway's ``lookup`` says whether it was
   executed; if so the fill is applied (a no-op if it already was) and the step
   recorded, if not it is forgotten;
4. re-reads the positions before every close (after a venue call or a fill since the
   last read), plans again from them, and sends each order under a request id
   deterministic per (action, symbol, step), which is also the fill id, so the venue
   executes it once and the state store applies it once;
5. records each step in the progress and in the journal in one Redis step.

Every progress save is fenced by the lease: it writes nothing (``LeaseLost``) unless
the lease is still this run's, and renews it. The lease is also renewed before a venue
call unless it surely has more than half its TTL (and a gateway timeout) left.

With the paper gateway (no venue) a close needs no ``pending``: one script checks the
lease and that the account and the mark are as read, writes the execution, applies the
fill and records the step and its journal records, all or nothing; if the account or
the mark moved, nothing is written and the run reads again.

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
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Callable, Generator, Mapping

import orjson
import redis

from risk_tasks import alerting, episodes
from risk_tasks.engine.liquidation import plan_liquidation
from risk_tasks.engine.metrics import compute_metrics, is_liquidatable
from risk_tasks.engine.model import ZERO, Account, Metrics, Position, Side, SymbolSpec
from risk_tasks.engine.positions import apply_fill
from risk_tasks.engine.validation import InvalidInput, identifier
from risk_tasks.failures import BadInput, LeaseBusy, NoPrice, PermanentError
from risk_tasks.gateways.base import Execution, ExecutionGateway
from risk_tasks.gateways.paper import FinalClose
from risk_tasks.leases import AccountLease, LeaseLost
from risk_tasks.logs import log_event
from risk_tasks.metrics import LIQUIDATIONS
from risk_tasks.state import keys
from risk_tasks.state.codec import (decode_account, decode_mark, decode_position,
                                    encode_position, pairs)

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

_SAVE = """
-- KEYS: 1 lease, 2 progress, 3 journal
-- ARGV: 1 lease token, 2 lease ttl (ms), 3 progress JSON, 4 progress ttl (s), 5... records
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('SET', KEYS[2], ARGV[3], 'EX', ARGV[4])
for i = 5, #ARGV do redis.call('XADD', KEYS[3], '*', 'd', ARGV[i]) end
return 1
"""


class Progress:
    """One action's progress: a JSON document in Redis, saved with its journal records
    in one step (so PostgreSQL gets each step exactly when Redis records it).

    With a ``lease`` (every action has one) a save is fenced by it: it writes nothing and
    raises ``LeaseLost`` unless the lease is still this run's, and it renews the lease,
    so a run that stalled past its lease can never overwrite a newer run's progress."""

    def __init__(self, client: redis.Redis, key: str, ttl_seconds: int,
                 lease: AccountLease | None = None) -> None:
        self.redis = client
        self.key = key
        self.ttl = ttl_seconds
        self.lease = lease

    def load(self) -> dict | None:
        raw = self.redis.get(self.key)
        return None if raw is None else orjson.loads(raw)

    def save(self, data: dict, records: tuple[dict, ...] | list[dict] = (),
             then: Callable[[Any], None] | None = None) -> None:
        """Save ``data`` and journal ``records``; ``then(pipeline)`` queues commands sent
        in the same round trip after the save (they run even if the save was refused)."""
        lease = self.lease
        if lease is None:
            pipe = self.redis.pipeline(transaction=True)
            pipe.set(self.key, orjson.dumps(data), ex=self.ttl)
            for record in records:
                pipe.xadd(keys.JOURNAL_STREAM, {"d": orjson.dumps(record)})
            if then is not None:
                then(pipe)
            pipe.execute()
            return
        pipe = self.redis.pipeline(transaction=False)
        sent_at = time.monotonic()
        pipe.eval(_SAVE, 3, lease.key, self.key, keys.JOURNAL_STREAM, lease.token,
                  lease.ttl_ms, orjson.dumps(data), self.ttl,
                  *[orjson.dumps(record) for record in records])
        if then is not None:
            then(pipe)
        if not pipe.execute()[0]:
            lease.held = False
            raise LeaseLost(f"lease of account {lease.account_id} lost; progress not saved")
        lease.renewed_at = sent_at


# -- STATE AS AN ACTION SEES IT --

_SNAPSHOT = """
-- KEYS: 1 lease, 2 progress, 3 account, 4 positions, 5 prices, 6 config version
-- ARGV: 1 lease token ('' to read without taking the lease), 2 lease ttl (ms)
-- Returns {taken, progress, account hash, positions hash, marks of the held symbols,
-- config version}, or only {0, progress} when the lease is someone else's (a lease
-- this token holds already is taken again: renewed).
local taken = 0
if ARGV[1] ~= '' then
  if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
    if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {0, redis.call('GET', KEYS[2])} end
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
  end
  taken = 1
end
local positions = redis.call('HGETALL', KEYS[4])
local symbols = {}
for i = 1, #positions, 2 do symbols[#symbols + 1] = positions[i] end
local marks = {}
if #symbols > 0 then marks = redis.call('HMGET', KEYS[5], unpack(symbols)) end
return {taken, redis.call('GET', KEYS[2]), redis.call('HGETALL', KEYS[3]), positions, marks,
        redis.call('GET', KEYS[6])}
"""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """An account, its positions and their marks, read in one step (one round trip).

    ``account`` carries the stored peak and day-start equity, not the monitor's slots
    (neither liquidation nor unwinding uses them). ``fields``, ``raw_positions`` and
    ``raw_marks`` are as Redis holds them, for a commit conditional on them."""

    fields: dict[bytes, bytes]
    raw_positions: dict[str, bytes]
    raw_marks: dict[str, bytes | None]
    account: Account
    marks: dict[str, Decimal]
    specs: dict[str, SymbolSpec]  # a held symbol without a spec counts at 100 % margin
    configured: frozenset[str]  # the symbols that have a spec
    raw_config: bytes | None = None  # the config version as read

    def missing_marks(self) -> list[str]:
        return [s for s in self.account.positions if s not in self.marks]

    def after_fill(self, symbol: str, quantity: Decimal, price: Decimal) -> "Snapshot":
        """The account as a fill of signed ``quantity`` at ``price`` in ``symbol`` leaves
        it, the marks unchanged: what a read just after the fill would return (the fill's
        arithmetic is ``StateStore.fill_change``'s)."""
        position, realized = apply_fill(self.account.positions.get(symbol), symbol,
                                        quantity, price)
        balance = Decimal(self.fields[b"balance"].decode()) + realized
        fields = self.fields | {b"balance": str(balance).encode()}
        raw_positions = dict(self.raw_positions)
        raw_marks = dict(self.raw_marks)
        marks = dict(self.marks)
        if position.quantity:
            raw_positions[symbol] = encode_position(position).encode()
        else:
            raw_positions.pop(symbol, None)
            raw_marks.pop(symbol, None)
            marks.pop(symbol, None)
        positions = {s: decode_position(s, raw) for s, raw in raw_positions.items()}
        return Snapshot(fields, raw_positions, raw_marks,
                        decode_account(self.account.account_id, fields, positions), marks,
                        self.specs, self.configured, self.raw_config)


# -- SHARED STEPS --

class AccountAction:
    """What liquidation and unwinding share: the lease, orders first, closes that are
    announced before they are sent and settled after."""

    source = "?"
    MAX_MOVES = 20  # re-reads in a row because the account or the mark moved under a close

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
        self.lease = AccountLease(rt.redis, account_id, rt.settings.lease_ttl_seconds,
                                  rt.settings.lease_wait_seconds, holder)
        self.progress = Progress(rt.redis, key, rt.settings.action_progress_ttl_seconds,
                                 self.lease)
        # A venue call starts with at least this much lease left (else it is renewed).
        self.lease_margin = max(rt.settings.lease_ttl_seconds / 2,
                                rt.settings.gateway_timeout_seconds + 1.0)
        self._snapshot = rt.redis.register_script(_SNAPSHOT)
        # A local start's records and keep-alive, left to the run's next write (see start)
        self.deferred: tuple[list[dict], Callable[[Any], None] | None] | None = None
        self.moves = 0
        self.latest: Snapshot | None = None  # see after_close
        self.done = False  # the last close ended the action (see last_close)

    def now(self) -> float:
        return self.rt.clock.time()

    # -- hooks of the two actions --

    def step_records(self, data: dict, step: dict) -> list[dict]:
        raise NotImplementedError

    def cancel_records(self, data: dict, canceled: int) -> list[dict]:
        raise NotImplementedError

    def on_step(self, data: dict, step: dict) -> None:
        """Update the progress for a finished step (before it is saved)."""

    def last_close(self, data: dict, after: Snapshot
                   ) -> tuple[list[dict], FinalClose] | None:
        """When a local close that leaves the account as ``after`` ends the action, and
        the action may end inside that close's step: the records of its end (``data``,
        the progress with the step, updated to the finished action) and the close's
        ``FinalClose``; else None (a hook: by default an action ends by its own save)."""
        return None

    def ended(self, data: dict) -> dict:
        """What follows an end written by the last close (a hook; see ``last_close``)."""
        raise NotImplementedError

    def touch(self) -> None:
        """Keep the lease (and whatever else must stay alive) fresh before a venue call.
        The lease is renewed unless it surely has ``lease_margin`` seconds left (every
        progress save renews it too)."""
        if self.lease.remaining() <= self.lease_margin:
            self.lease.renew()
        self.keep_alive_if_due()

    def keep_alive_if_due(self) -> None:
        """Keep alive whatever must stay alive besides the lease, if due (a hook)."""

    # -- state --

    def snapshot(self, take: bool = False) -> tuple[bool, dict | None, Snapshot | None]:
        """Read the account, its positions, their marks and the action's progress in one
        round trip; with ``take``, take the lease first in the same step. Returns
        ``(taken, progress, snapshot)``; no snapshot when the lease was busy."""
        sent_at = time.monotonic()
        reply = self._snapshot(keys=self.snapshot_keys(),
                               args=[self.lease.token if take else "", self.lease.ttl_ms])
        return self.read_snapshot(reply, take, sent_at)

    def snapshot_keys(self) -> list[str]:
        return [self.lease.key, self.progress.key, keys.account(self.account_id),
                keys.positions(self.account_id), keys.PRICES, keys.CONFIG_VERSION]

    def read_snapshot(self, reply: list, take: bool, sent_at: float
                      ) -> tuple[bool, dict | None, Snapshot | None]:
        """``snapshot``'s result from the script's ``reply`` (sent at ``sent_at``)."""
        progress = None if reply[1] is None else orjson.loads(reply[1])
        if take and not reply[0]:
            return False, progress, None
        if take:
            self.lease.took(sent_at)
        return bool(take), progress, self.decode_snapshot(*reply[2:6])

    def decode_snapshot(self, raw_fields: list, raw_position_list: list, raw_mark_list: list,
                        config_version: bytes | None) -> Snapshot:
        fields = pairs(raw_fields)
        if not fields:
            raise BadInput(f"account_id: unknown account {self.account_id}")
        raw_positions = {k.decode(): v for k, v in pairs(raw_position_list).items()}
        raw_marks = dict(zip(raw_positions, raw_mark_list))
        positions = {s: decode_position(s, raw) for s, raw in raw_positions.items()}
        config = self.store.config(config_version or b"0")
        specs = dict(config.specs)
        marks: dict[str, Decimal] = {}
        for symbol, raw in raw_marks.items():
            specs.setdefault(symbol, SymbolSpec(symbol, Decimal(1), Decimal(1)))
            mark = decode_mark(raw)
            if mark is not None:
                marks[symbol] = mark.price
        return Snapshot(fields, raw_positions, raw_marks,
                        decode_account(self.account_id, fields, positions), marks, specs,
                        frozenset(config.specs), config_version)

    def take(self, first: tuple[bool, dict | None, Snapshot | None] | None = None
             ) -> tuple[dict | None, Snapshot | None]:
        """Take the lease and read everything under it, polling for up to the lease's
        wait. A finished action's progress comes back at once, lease or not (and then
        no snapshot, and the lease is not kept). ``first``: the first attempt's result,
        when it was made already (``take_all``)."""
        deadline = time.monotonic() + self.lease.wait_seconds
        pause = 0.01
        while True:
            taken, data, snap = first if first is not None else self.snapshot(take=True)
            first = None
            if data is not None and data["status"] in FINAL:
                if taken:
                    self.lease.release()
                return data, None
            if taken:
                return data, snap
            if time.monotonic() >= deadline:
                raise LeaseBusy(f"account {self.account_id} is busy with another action "
                                f"({self.lease.holder()})")
            time.sleep(pause)
            pause = min(pause * 2, 0.1)

    def release(self) -> None:
        try:
            self.lease.release()
        except redis.RedisError:
            pass  # it expires by itself; the original error (if any) matters more

    def priced(self, snap: Snapshot) -> Snapshot:
        """``snap``, or ``NoPrice`` when a held symbol has no mark."""
        missing = snap.missing_marks()
        if missing:
            raise NoPrice(f"no mark price for {missing[0]} held by {self.account_id}")
        return snap

    def metrics(self, snap: Snapshot) -> Metrics:
        account = snap.account
        return compute_metrics(account.balance, account.positions, snap.marks, snap.specs,
                               account.peak_equity, account.daily_start_equity)

    # -- steps --

    def keep_alive_in(self, pipe: Any) -> None:
        """Queue on ``pipe`` whatever must be kept alive besides the lease (a hook)."""

    def start(self, data: dict, records: list[dict]) -> None:
        """Record the start of a run (its ``records``; ``keep_alive_in`` in the same round
        trip) and cancel the orders. The start is recorded before a venue is called, so
        every attempt counts. A gateway without a venue (paper) cancels nothing and
        changes nothing until a close, so there the start and the cancellation are
        written by the run's next write, in its round trip (``deferred``): the first
        close's script, or the next save. A run that dies before that did nothing."""
        if self.gateway.local:
            self.cancel_orders(data, records, self.keep_alive_in, defer=True)
        else:
            self.save(data, records, self.keep_alive_in)
            self.cancel_orders(data)

    def cancel_orders(self, data: dict, records: list[dict] | None = None,
                      then: Callable[[Any], None] | None = None, defer: bool = False) -> None:
        """Cancel the account's open orders, once per action (repeating it is harmless,
        so ``records`` that precede it, such as the start, may be saved with it); with
        ``defer``, what would be saved is left to the next write."""
        if data.get("orders_canceled") is None:
            self.touch()
            canceled = self.gateway.cancel_all_orders(self.account_id,
                                                      request_id(self.order_prefix, "cancel"))
            data["orders_canceled"] = canceled
            records = (records or []) + self.cancel_records(data, canceled)
        elif records is None:
            return
        if defer:
            self.deferred = (list(records), then)
        else:
            self.save(data, records, then)

    def save(self, data: dict, records: tuple[dict, ...] | list[dict] = (),
             then: Callable[[Any], None] | None = None) -> None:
        """``Progress.save``, with what a local start left to it first (``deferred``)."""
        records, then = self.with_deferred(records, then)
        self.progress.save(data, records, then)
        self.deferred = None

    def with_deferred(self, records: tuple[dict, ...] | list[dict],
                      then: Callable[[Any], None] | None
                      ) -> tuple[list[dict], Callable[[Any], None] | None]:
        if self.deferred is None:
            return list(records), then
        early, early_then = self.deferred
        if early_then is None or then is None:
            return early + list(records), early_then or then

        def both(pipe: Any) -> None:
            early_then(pipe)
            then(pipe)

        return early + list(records), both

    def settle_pending(self, data: dict) -> bool:
        """Finish or forget the order that was in flight when an earlier run stopped;
        True when that changed the account."""
        pending = data.get("pending")
        if not pending:
            return False
        self.touch()
        execution = self.gateway.lookup(pending["request_id"], self.account_id)
        if execution is None:
            # Never executed. Planning again from the positions as they are now sends
            # the same request id if it picks the same symbol (the step is unchanged).
            log_event(log, "in-flight order was not executed", account_id=self.account_id,
                      reference=self.reference, request_id=pending["request_id"])
            data["pending"] = None
            self.save(data)
            return False
        log_event(log, "in-flight order was executed; settling it",
                  account_id=self.account_id, reference=self.reference,
                  request_id=pending["request_id"])
        self.gateway.apply(execution, self.source, self.reference)
        self.complete(data, execution)
        return True

    def close(self, data: dict, snap: Snapshot, symbol: str, quantity: Decimal) -> dict | None:
        """Close ``quantity`` of the position in ``symbol`` as ``snap`` shows it. None when
        the account or the mark moved since ``snap`` and nothing was done (read again)."""
        return drive(self.closing(data, snap, symbol, quantity))

    def closing(self, data: dict, snap: Snapshot, symbol: str, quantity: Decimal
                ) -> Generator[CloseRequest, Any, dict | None]:
        """``close`` as steps: yields the local close's request and takes its reply (so a
        batch can send the closes of its episodes together, ``drive``)."""
        if len(data["steps"]) >= MAX_STEPS:
            raise PermanentError(f"{self.reference}: more than {MAX_STEPS} steps, giving up")
        position = snap.account.positions[symbol]
        step = data["next_step"]
        side = Side.SELL if position.quantity > 0 else Side.BUY
        rid = request_id(self.order_prefix, symbol, str(step))
        if self.gateway.local and self.moves < self.MAX_MOVES \
                and symbol in snap.configured:
            done = yield from self.closing_local(data, snap, symbol, position, side,
                                                 quantity, rid)
            if done is not None or self.moves:
                return done
        data["pending"] = {"step": step, "symbol": symbol, "side": side.value,
                           "quantity": str(quantity), "request_id": rid,
                           "position_quantity": str(position.quantity),
                           "entry_price": str(position.entry_price)}
        self.save(data)  # renews the lease too
        self.touch()
        execution = self.gateway.close_position(self.account_id, symbol, side, quantity, rid,
                                                self.source, self.reference)
        return self.complete(data, execution)

    def closing_local(self, data: dict, snap: Snapshot, symbol: str, position: Position,
                      side: Side, quantity: Decimal, rid: str
                      ) -> Generator[CloseRequest, Any, dict | None]:
        """A close on a gateway without a venue: execution at the mark of ``snap``, the
        fill and the recorded step in one script (``PaperGateway.close_and_record``), so
        no ``pending`` is needed: there is no moment when the order is executed and not
        recorded. None, with ``self.moves`` counted, when the account or mark moved;
        None with ``moves`` 0 when the request id was executed before (the caller then
        takes the announce/send/settle path, which applies that execution)."""
        mark = decode_mark(snap.raw_marks.get(symbol))
        if mark is None:
            raise NoPrice(f"no mark price for {symbol}: cannot fill at mark")
        execution = Execution(rid, self.account_id, symbol, side, quantity, mark.price)
        new = orjson.loads(orjson.dumps(data))
        new["pending"] = {"step": data["next_step"], "symbol": symbol, "side": side.value,
                          "quantity": str(quantity), "request_id": rid,
                          "position_quantity": str(position.quantity),
                          "entry_price": str(position.entry_price)}
        step = self.record_step(new, execution)
        self.keep_alive_if_due()
        records, then = self.with_deferred(self.step_records(new, step), None)
        signed = quantity if side is Side.BUY else -quantity
        last = self.last_close(new, snap.after_fill(symbol, signed, mark.price))
        final = None
        if last is not None:
            end_records, final = last
            records += end_records
            then = None  # nothing to keep alive: the close ends the action
        request = CloseRequest(self.gateway, dict(
            execution=execution, fields=snap.fields, raw_position=snap.raw_positions.get(symbol),
            raw_mark=snap.raw_marks[symbol], source=self.source, reference=self.reference,
            lease=self.lease, progress_key=self.progress.key, progress=orjson.dumps(new),
            progress_ttl=self.progress.ttl, records=[orjson.dumps(r) for r in records],
            then=then, final=final))
        sent_at = time.monotonic()
        reply = yield request
        outcome = reply[0].decode()
        if outcome == "OK":
            self.deferred = None
            self.lease.renewed_at = sent_at
            self.moves = 0
            data.clear()
            data.update(new)
            self.log_step(step)
            if final is not None:
                self.lease.held = False  # released by the close
                self.done = True
            else:
                self.latest = self.decode_snapshot(*reply[1:5])
            return step
        if outcome == "LEASE":
            self.lease.held = False
            raise LeaseLost(f"lease of account {self.account_id} lost; nothing closed")
        if outcome in ("MARK", "RETRY"):
            self.moves += 1
            return None
        self.moves = 0  # EXECUTED or DUP: done before, settle it step by step
        return None

    def after_close(self) -> Snapshot | None:
        """The account as a local close left it (read in the close's own step), once;
        None when it must be read again."""
        latest, self.latest = self.latest, None
        return latest

    def complete(self, data: dict, execution: Execution) -> dict:
        step = self.record_step(data, execution)
        self.save(data, self.step_records(data, step))
        self.log_step(step)
        return step

    def record_step(self, data: dict, execution: Execution) -> dict:
        """Turn ``data``'s pending order into a step, as ``execution`` filled it."""
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
        return step

    def log_step(self, step: dict) -> None:
        log_event(log, f"{self.source} step", account_id=self.account_id,
                  reference=self.reference, symbol=step["symbol"], side=step["side"],
                  quantity=step["quantity"], price=step["price"], step=step["step"])


@dataclass(slots=True)
class CloseRequest:
    """A local close an action waits on: ``close_and_record``'s arguments, by name."""

    gateway: Any  # PaperGateway
    kwargs: dict

    def execute(self) -> list:
        return self.gateway.close_and_record(**self.kwargs)


def execute_all(requests: list[CloseRequest]) -> list:
    """The replies to ``requests`` (each an exception where it failed), sent together in
    one pipelined round trip (``close_and_record_many``)."""
    if not requests:
        return []
    return requests[0].gateway.close_and_record_many([r.kwargs for r in requests])


def drive(steps: Generator[CloseRequest, Any, Any], reply: Any = None,
          error: BaseException | None = None) -> Any:
    """Run ``steps`` to its end, executing every close it asks for at once, and return
    what it returns. ``reply`` or ``error`` answers the close it waits on, if it was
    started already (a batch's first closes, ``execute_all``)."""
    try:
        if error is not None:
            request = steps.throw(error)
        elif reply is not None:
            request = steps.send(reply)
        else:
            request = next(steps)
        while True:
            try:
                answer = request.execute()
            except Exception as exc:  # noqa: BLE001 - raised where the close was asked for
                request = steps.throw(exc)
            else:
                request = steps.send(answer)
    except StopIteration as stop:
        return stop.value


def take_all(client: redis.Redis, actions: list[AccountAction]
             ) -> list[tuple[bool, dict | None, Snapshot | None] | None]:
    """The first attempt of ``take`` of many actions (a batch's) in one round trip: each
    one's lease taken and its state read by its own script, pipelined. Hand each result
    to the action's ``take(first=...)``; None where the reply was an error (that action
    takes again by itself; its token holds the lease if the script ran)."""
    if not actions:
        return []
    sha = actions[0]._snapshot.sha
    pipe = client.pipeline(transaction=False)
    sent_at = time.monotonic()
    for action in actions:
        action_keys = action.snapshot_keys()
        pipe.evalsha(sha, len(action_keys), *action_keys, action.lease.token,
                     action.lease.ttl_ms)
    replies = pipe.execute(raise_on_error=False)
    firsts: list[tuple[bool, dict | None, Snapshot | None] | None] = []
    for action, reply in zip(actions, replies):
        try:
            firsts.append(None if isinstance(reply, Exception)
                          else action.read_snapshot(reply, True, sent_at))
        except Exception:  # noqa: BLE001 - e.g. an unknown account: its own take says so
            firsts.append(None)
    return firsts


def realized_total(data: dict) -> Decimal:
    return sum((Decimal(s["realized_pnl"]) for s in data["steps"]), ZERO)


# -- LIQUIDATION --

class Liquidation(AccountAction):
    """One liquidation episode of one account (see the module docstring)."""

    source = "liquidation"

    def __init__(self, rt, gateway: ExecutionGateway, account_id: str, reason: str,  # noqa: ANN001
                 episode_id: str, notify: Notify, holder: str = "liquidation",
                 alert_again: bool = False) -> None:
        super().__init__(rt, gateway, account_id, episode_id, liquidation_key(episode_id),
                         holder)
        self.reason = reason
        self.episode_id = episode_id
        self.notify = notify
        # The completion's alert is sent again when a completed episode is run again: for
        # callers whose ``notify`` only sends after the completion is saved (a batch), so a
        # run that died in between still alerts; the alert id makes the repeat a no-op.
        self.alert_again = alert_again
        self.extended_at: float | None = None  # monotonic; when the episode was last kept alive

    def run(self, first: tuple[bool, dict | None, Snapshot | None] | None = None) -> dict:
        """The episode, from its ``take`` (``first``: its first attempt, made already)."""
        return drive(self.steps(first))

    def steps(self, first: tuple[bool, dict | None, Snapshot | None] | None = None
              ) -> Generator[CloseRequest, Any, dict]:
        """``run`` as steps: yields each local close's request and takes its reply."""
        data, snap = self.take(first)
        if snap is None:
            if self.alert_again and data["status"] == COMPLETED:
                self.notify(self.completion_alert(data))
            return self.result(data, duplicate=True)
        try:
            if data is None:
                data = self.begin(snap)
                if data["status"] == SKIPPED:
                    return self.result(data)
            else:
                data["attempts"] += 1
                data["status"] = RUNNING
                self.start(data, [self.record(data, RUNNING)])
            if self.settle_pending(data) or not self.gateway.local:
                snap = None  # a settled fill or a venue call since the read: read again
            while True:
                if snap is None:
                    snap = self.snapshot()[2]
                self.priced(snap)
                account = snap.account
                plan = plan_liquidation(account.balance, account.positions, snap.marks,
                                        snap.specs)
                if not plan:
                    break
                symbol = plan[0]
                yield from self.closing(data, snap, symbol,
                                        abs(account.positions[symbol].quantity))
                if self.done:
                    return self.ended(data)
                snap = self.after_close()
            return self.finish(data, snap)
        finally:
            self.release()

    def begin(self, snap: Snapshot) -> dict:
        """Start the episode from the state read under the lease: skipped at once when
        the account is no longer liquidatable; else the start is recorded (keeping the
        episode alive in the same round trip) and the orders canceled (see ``start``)."""
        now = self.now()
        metrics = self.metrics(self.priced(snap))
        data = {"kind": "liquidation", "episode_id": self.episode_id,
                "account_id": self.account_id, "reason": self.reason, "status": RUNNING,
                "attempts": 1, "started_at": now, "next_step": 1, "steps": [],
                "pending": None, "orders_canceled": None,
                "equity_before": str(metrics.equity),
                "maintenance_before": str(metrics.maintenance_margin)}
        if not is_liquidatable(metrics):
            # Prices moved back, or an unwind closed the positions first: nothing to do.
            data.update(status=SKIPPED, completed_at=now, equity_after=str(metrics.equity))
            self.save(data, [self.record(data, SKIPPED, equity_after=str(metrics.equity),
                                         completed_at=now,
                                         error="not liquidatable when the liquidation ran")],
                      self.end_in)
            LIQUIDATIONS.labels(SKIPPED).inc()
            log_event(log, "liquidation skipped: account not liquidatable",
                      account_id=self.account_id, episode_id=self.episode_id,
                      equity=str(metrics.equity),
                      maintenance=str(metrics.maintenance_margin))
            return data
        self.start(data, [self.record(data, "started")])
        LIQUIDATIONS.labels("started").inc()
        # INFO: the completion (WARNING) says all of it; at a shock this is a line per account.
        log_event(log, "liquidation started", logging.INFO, account_id=self.account_id,
                  episode_id=self.episode_id, reason=self.reason,
                  equity=str(metrics.equity), maintenance=str(metrics.maintenance_margin))
        return data

    # -- the episode guard, sent along with other commands --

    def keep_alive_in(self, pipe: Any) -> None:
        episodes.extend(pipe, self.account_id, self.episode_id)
        self.extended_at = time.monotonic()

    def end_in(self, pipe: Any) -> None:
        """End the episode and release the lease, after the final save (in its round
        trip; if that save was refused for a lost lease, the episode is ended anyway:
        whoever holds the lease re-reads the positions before it closes anything)."""
        episodes.end(pipe, self.account_id, self.episode_id)
        self.lease.release_in(pipe)

    def keep_alive_if_due(self) -> None:
        # The first save of a run keeps the episode alive (``keep_alive_in``); a venue call
        # before it, or a long run, does it here.
        if (self.extended_at is None and not self.gateway.local) or (
                self.extended_at is not None
                and time.monotonic() - self.extended_at > episodes.EPISODE_TTL / 4):
            self.keep_alive_in(self.redis)

    def finish(self, data: dict, snap: Snapshot) -> dict:
        records = self.complete_episode(data, snap)
        # The alert goes first, under an id of this episode: if this run dies before the
        # completion is saved, the next one sends the same alert, delivered once.
        self.notify(self.completion_alert(data))
        self.save(data, records, self.end_in)
        return self.completed(data)

    def complete_episode(self, data: dict, snap: Snapshot) -> list[dict]:
        """Mark ``data`` completed on the account as ``snap`` shows it; the records."""
        now = self.now()
        realized = realized_total(data)
        data.update(status=COMPLETED, completed_at=now,
                    equity_after=str(self.metrics(snap).equity), realized_pnl=str(realized))
        return [self.record(data, COMPLETED, equity_after=data["equity_after"],
                            realized_pnl=str(realized),
                            positions_closed=self.closed_positions(data), completed_at=now)]

    def completed(self, data: dict) -> dict:
        LIQUIDATIONS.labels(COMPLETED).inc()
        log_event(log, "liquidation completed", logging.WARNING, account_id=self.account_id,
                  episode_id=self.episode_id,
                  positions_closed=[s["symbol"] for s in data["steps"]],
                  realized_pnl=data["realized_pnl"], attempts=data["attempts"])
        return self.result(data)

    def last_close(self, data: dict, after: Snapshot
                   ) -> tuple[list[dict], FinalClose] | None:
        """The episode completes inside its last close's step when the close leaves the
        account with nothing more to close, and only for a caller that sends the alert
        after the completion is written (``alert_again``: a batch); one that sends it
        first saves the completion by itself (``finish``)."""
        account = after.account
        if not self.alert_again or plan_liquidation(account.balance, account.positions,
                                                    after.marks, after.specs):
            return None
        return self.complete_episode(data, after), FinalClose(
            after.raw_marks, after.raw_config, episodes.key(self.account_id),
            self.episode_id)

    def ended(self, data: dict) -> dict:
        self.notify(self.completion_alert(data))
        return self.completed(data)

    def completion_alert(self, data: dict) -> dict:
        """The critical alert of a completed episode, from its progress alone (so a
        repeat builds the same alert, under the same id)."""
        closed = [s["symbol"] for s in data["steps"]]
        return alerting.make_alert(
            "critical", "liquidation",
            f"{self.account_id}: liquidated ({data['reason']}); closed "
            f"{', '.join(closed) or 'nothing'}, realised PnL "
            f"{Decimal(data['realized_pnl']):.2f}",
            account_id=self.account_id, at=data["completed_at"],
            details={"episode_id": self.episode_id, "positions_closed": closed,
                     "equity_before": data["equity_before"],
                     "equity_after": data["equity_after"],
                     "orders_canceled": data["orders_canceled"]}) \
            | {"alert_id": liquidation_alert_id(self.episode_id)}

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
        data, snap = self.take()  # an unknown account is bad input
        if snap is None:
            return self.result(data, duplicate=True)
        try:
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
            self.start(data, [])
            if self.settle_pending(data) or not self.gateway.local:
                snap = None  # a settled fill or a venue call since the read: read again
            while True:
                if snap is None:
                    snap = self.snapshot()[2]
                positions = snap.account.positions
                held = {s: p for s, p in positions.items() if p.quantity}
                if not held:
                    break
                todo = [s for s in held if s not in data["round_done"]]
                if not todo:
                    self.pause()
                    data["round"] += 1
                    data["round_done"] = []
                    self.save(data)
                    snap = None
                    continue
                marks = snap.marks
                symbol = min(todo, key=lambda s: (
                    -abs(held[s].quantity) * marks.get(s, held[s].entry_price), s))
                position = held[symbol]
                size = Decimal(data["sizes"].setdefault(symbol, str(abs(position.quantity))))
                quantity = min(abs(position.quantity), size * self.fraction)
                self.close(data, snap, symbol, quantity)
                snap = self.after_close()
            return self.finish(data)
        finally:
            self.release()

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
        self.save(data)
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
