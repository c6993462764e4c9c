"""The pre-trade path: validate, read the account in one round trip, decide, commit.

Two Redis round trips per check (one pipelined round trip per batch of checks), no
PostgreSQL: the decision and its audit record are written to Redis atomically and the
audit stream is drained to PostgreSQL elsewhere. A decision is stored under its
``order_id`` for 25 hours, so a client that timed out may retry and get the same answer.

A check or a batch given its task's ``SuccessTarget`` on the same Redis server stores
the task's result in its commit, so the worker needs no third round trip for it
(``Outcome.replied`` says it did).
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from itertools import count
from typing import Any, Sequence

import orjson

from risk_tasks.engine.model import Order, Reason, TradingState
from risk_tasks.engine.pretrade import CheckContext, PretradeLimits, approve_quickly, decide
from risk_tasks.engine.validation import InvalidInput, validate_order
from risk_tasks.result_backend import SuccessTarget, redis_server
from risk_tasks.state import keys
from risk_tasks.state.codec import (
    check_fields, day_id, decode_account, decode_mark, decode_positions, decode_slot,
)
from risk_tasks.state.hotpath import HotConnection
from risk_tasks.state.store import StateStore

_STATES = {s.value.encode(): s for s in TradingState}
_STATES[b""] = TradingState.ACTIVE  # never set: the platform starts active
MAX_AUDITED_REQUEST = 4096  # bytes of a malformed request kept in the audit trail
MAX_BATCH = 1000
COMMIT_ATTEMPTS = 3

_nonce = count()


@dataclass(slots=True)
class Outcome:
    """A finished check: the result dict, whether it replays an earlier decision, and
    whether its commit also stored its task's result (this result, or its batch's list)."""

    result: dict[str, Any]
    replayed: bool = False
    replied: bool = False


class PretradeService:
    def __init__(self, store: StateStore, worker: str | None = None) -> None:
        self.store = store
        settings = store.settings
        self.limits = PretradeLimits(settings.price_stale_seconds, settings.rate_limit_per_second)
        self.window_ms = str(int(settings.rate_window_seconds * 1000))
        self.ttl = str(settings.idempotency_ttl_seconds)
        self.worker = worker or f"{socket.gethostname()}:{os.getpid()}"
        self.hot = HotConnection(store.redis)
        self.server = redis_server(store.redis)

    # -- ONE ORDER --

    def check(self, raw: Any, success: SuccessTarget | None = None) -> Outcome:
        """The decision on one order. With ``success`` (its task's result, on this
        Redis server) a decision committed by this check is also stored there."""
        started = time.perf_counter_ns()
        try:
            order = validate_order(raw)
        except InvalidInput as exc:
            return self._invalid(raw, exc, started)
        success = self._usable(success)
        for _ in range(COMMIT_ATTEMPTS):
            reply = self.hot.call(*self._read(order))
            outcome = self._replay_or_decide(order, raw, reply, started, self.store.clock.time())
            if isinstance(outcome, Outcome):
                return outcome
            commit = self._commit(order, outcome, reply)
            if success is not None:
                _, commit_keys, args = commit
                commit = (self.store.check_commit_replying, (*commit_keys, success.key),
                          (*args, success.document(outcome[2]), success.expires, success.db))
            status = self.hot.call(*commit)
            final = self._after_commit(outcome[1], status)
            if final is not None:
                final.replied = success is not None and not final.replayed
                return final
        raise RuntimeError("platform or account state kept changing during the check")

    # -- MANY ORDERS, TWO ROUND TRIPS --

    def check_batch(self, raws: Sequence[Any],
                    success: SuccessTarget | None = None) -> list[Outcome]:
        """Decisions for many orders, in their order, with pipelined reads and writes.
        With ``success`` (its task's result, on this Redis server) the commit also
        stores the list of results there, unless an approval raced a state change and
        was decided again (every outcome's ``replied`` says whether it did)."""
        started = time.perf_counter_ns()
        success = self._usable(success)
        outcomes: list[Outcome | None] = [None] * len(raws)
        orders: list[tuple[int, Order]] = []
        for i, raw in enumerate(raws):
            try:
                orders.append((i, validate_order(raw)))
            except InvalidInput as exc:
                outcomes[i] = self._invalid(raw, exc, started)
        if orders:
            replies = self._call_many(self.store.check_read_many,
                                      [self._read(order) for _, order in orders])
            pending = []
            commits = []
            now = self.store.clock.time()  # one instant for the batch, as its read had
            for (i, order), reply in zip(orders, replies):
                outcome = self._replay_or_decide(order, raws[i], reply, started, now)
                if isinstance(outcome, Outcome):
                    outcomes[i] = outcome
                    continue
                commits.append(self._commit(order, outcome, reply))
                pending.append((i, outcome[1]))
            statuses = []
            if commits and success is not None:
                head, tail = success.around()
                items = [b"" if o is None else orjson.dumps(o.result) for o in outcomes]
                statuses = self._call_many(
                    self.store.check_commit_many_replying, commits, [success.key],
                    [head, tail, success.expires, success.db, *items])
            elif commits:
                statuses = self._call_many(self.store.check_commit_many, commits)
            replied = bool(commits) and success is not None
            for (i, result), status in zip(pending, statuses):
                final = self._after_commit(result, status)
                if final is None:  # a raced approval is decided again on its own (rare)
                    final = self.check(raws[i])
                    replied = False
                outcomes[i] = final
            if replied:
                for outcome in outcomes:
                    outcome.replied = True  # type: ignore[union-attr]
        return outcomes  # type: ignore[return-value]

    # -- STEPS --

    def _usable(self, success: SuccessTarget | None) -> SuccessTarget | None:
        """``success`` if this service's scripts can write it (the same Redis server and
        credentials as the result backend), else None: the worker stores the result."""
        return success if success is not None and success.server == self.server else None

    def _call_many(self, script: Any, calls: list[tuple], keys_after: Sequence = (),
                   args_after: Sequence = ()) -> list:
        """One invocation of a batch script for many (script, keys, args) calls, then
        ``keys_after`` and ``args_after``."""
        keys_flat: list = []
        args_flat: list = []
        for _, k, a in calls:
            keys_flat.extend(k)
            args_flat.extend(a)
        keys_flat.extend(keys_after)
        args_flat.extend(args_after)
        return self.hot.call(script, keys_flat, args_flat)

    def _read(self, order: Order) -> tuple:
        return (self.store.check_read_script,
                (keys.idempotency(order.account_id, order.order_id), keys.PLATFORM_STATE,
                 keys.account(order.account_id), keys.positions(order.account_id),
                 keys.PRICES, keys.rate_window(order.account_id), keys.CONFIG_VERSION),
                (order.symbol, self.window_ms, f"{self.worker}:{next(_nonce)}",
                 keys.SHARD_PREFIX))

    def _replay_or_decide(self, order: Order, raw: Any, reply: list, started: int,
                          now: float) -> Outcome | tuple[bool, dict, bytes, bytes, bytes]:
        """A replayed decision, or (approved, result, its JSON, audit record, the account
        status read) for the commit."""
        if reply[0] == 1:
            return Outcome(orjson.loads(reply[1]), replayed=True)
        ctx, status = self._context(order, reply, now)
        metrics = approve_quickly(order, ctx)
        if metrics is not None:
            approved = True
            result = {
                "order_id": order.order_id, "account_id": order.account_id, "approved": True,
                "violations": [], "rejection_reason": None, "message": None,
                "post_trade_metrics": metrics,
                "processing_time_us": (time.perf_counter_ns() - started) // 1000,
            }
        else:
            decision = decide(order, ctx)
            approved = decision.approved
            result = decision.to_dict(order.order_id, order.account_id,
                                      (time.perf_counter_ns() - started) // 1000)
        result_json = orjson.dumps(result)
        audit = b'{"r":' + result_json + b',"o":' + _request_json(raw) + \
            b',"ts":' + repr(now).encode() + b',"w":' + orjson.dumps(self.worker) + b"}"
        return approved, result, result_json, audit, status

    def _context(self, order: Order, reply: list, now: float) -> tuple[CheckContext, bytes]:
        """What a decision reads, from the read script's reply (not a replay), and the
        account's status as stored, which an approval's commit re-checks."""
        state = _STATES.get(reply[1]) or TradingState(reply[1].decode())
        config = self.store.config(reply[3])
        if reply[0] == 2:
            return CheckContext(now, state, None, {}, config.specs, config.policies, 0,
                                self.limits), b""
        _, _, _, _, acct, pos, syms, px, recent, hwm, day, dayid = reply
        fields = check_fields(acct)
        account = decode_account(
            order.account_id, fields, decode_positions(pos), decode_slot(hwm),
            decode_slot(day), bool(dayid) and dayid.decode() == day_id(now))
        marks = {}
        for sym, mark in zip(syms, px):
            if mark:
                marks[sym.decode()] = decode_mark(mark)
        return CheckContext(now, state, account, marks, config.specs, config.policies,
                            recent, self.limits), fields.get(b"status", b"")

    def _commit(self, order: Order, decided: tuple, reply: list) -> tuple:
        """The commit of a decision: an approval re-checks the platform's state version
        and the account's status it was decided on."""
        approved, _, result_json, audit, status = decided
        return (self.store.check_commit_script,
                (keys.idempotency(order.account_id, order.order_id), keys.PLATFORM_STATE,
                 keys.account(order.account_id), keys.AUDIT_STREAM),
                (result_json, self.ttl, audit, "1" if approved else "0",
                 reply[2], status if approved else b""))

    @staticmethod
    def _after_commit(result: dict, status: list) -> Outcome | None:
        tag = status[0]
        if tag == b"OK":
            return Outcome(result)
        if tag == b"DUP":
            return Outcome(orjson.loads(status[1]), replayed=True)
        return None  # RETRY

    def _invalid(self, raw: Any, exc: InvalidInput, started: int) -> Outcome:
        message = _utf8(str(exc))
        result = {
            "order_id": _field(raw, "order_id"),
            "account_id": _field(raw, "account_id"),
            "approved": False,
            "violations": [message],
            "rejection_reason": Reason.INVALID_REQUEST.value,
            "message": message,
            "post_trade_metrics": {},
            "processing_time_us": (time.perf_counter_ns() - started) // 1000,
        }
        audit = b'{"r":' + orjson.dumps(result) + b',"o":' + _request_json(raw) + \
            b',"ts":' + repr(self.store.clock.time()).encode() + b',"w":' + \
            orjson.dumps(self.worker) + b"}"
        self.store.redis.xadd(keys.AUDIT_STREAM, {"d": audit})
        return Outcome(result)


def _field(raw: Any, name: str) -> str | None:
    if isinstance(raw, dict):
        value = raw.get(name)
        if isinstance(value, str) and len(value) <= 128:
            return _utf8(value)
    return None


def _utf8(text: str) -> str:
    """``text`` as valid UTF-8: JSON can carry a lone surrogate (``"\\ud800"``), UTF-8 and
    the audit trail cannot, so it is kept escaped."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode()
    return text


def _request_json(raw: Any) -> bytes:
    """The request as received, for the audit trail; oversized or odd ones are cut."""
    try:
        encoded = orjson.dumps(raw)
    except (TypeError, orjson.JSONEncodeError):
        encoded = orjson.dumps({"unserialisable": repr(raw)[:MAX_AUDITED_REQUEST]})
    if len(encoded) > MAX_AUDITED_REQUEST:
        encoded = orjson.dumps({"truncated": encoded[:MAX_AUDITED_REQUEST].decode(errors="replace"),
                                "bytes": len(encoded)})
    return encoded


__all__ = ["PretradeService", "Outcome", "MAX_BATCH"]
