"""Drain the Redis journals into PostgreSQL, exactly once, in batches.

Every change and every decision is first appended to a Redis stream, in the same atomic
step as the change itself (``risk:audit`` for pre-trade decisions, ``risk:journal`` for
the rest). A drain takes a batch after the stream's cursor, writes the rows and moves
the cursor **in the same database transaction**, then trims what it wrote from Redis.
A crash at any point either leaves the cursor (and the rows) as they were or has
committed both, so no record is written twice or lost. While PostgreSQL is down the
streams simply grow (``risk_audit_backlog``); the drain catches up when it returns.

A record that the database refuses (bad data, not an outage) is written to
``dead_letters`` with its payload and the error, and the drain moves past it.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import Any, Callable, Iterable, Sequence

import orjson
import redis
from sqlalchemy import Table, bindparam, delete, select, update
from sqlalchemy.exc import DataError, IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.orm import Session, sessionmaker

from models import tables as t
from risk_tasks.state import keys

log = logging.getLogger(__name__)

Record = tuple[str, dict]  # (stream id, payload)
Handler = Callable[[Session, list[Record]], None]

_HANDLERS: dict[str, tuple[int, Handler]] = {}
STREAMS = (keys.AUDIT_STREAM, keys.JOURNAL_STREAM)


class RecordError(ValueError):
    """A journal record that cannot be written as it is."""


# Errors that belong to a record, not to the database being away: the record is kept
# in dead_letters and the drain moves on. Outages (OperationalError) propagate instead.
REFUSED = (IntegrityError, DataError, ProgrammingError, RecordError, KeyError, TypeError,
           ValueError, InvalidOperation)


def handles(kind: str, order: int) -> Callable[[Handler], Handler]:
    """Register the writer of journal records ``{"t": kind}``.

    Within a batch, record kinds are written in ``order`` (inserts before the updates
    that refer to them); records of one kind keep their stream order.
    """

    def register(fn: Handler) -> Handler:
        _HANDLERS[kind] = (order, fn)
        return fn

    return register


def ts(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(float(value), tz=timezone.utc)


def dec(value: Any) -> Decimal | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
    return number if number.is_finite() and abs(number) < Decimal("1e30") else None


def short(value: Any, length: int) -> str | None:
    return value if isinstance(value, str) and len(value) <= length else None


def upsert(session: Session, model: type, rows: Sequence[dict], key: Sequence[str],
           update_columns: Sequence[str] | None = None) -> None:
    """INSERT ... ON CONFLICT (key) DO UPDATE (or DO NOTHING without update columns)."""
    if not rows:
        return
    table: Table = model.__table__
    if session.bind.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    stmt = insert(table)
    if update_columns:
        stmt = stmt.on_conflict_do_update(
            index_elements=list(key),
            set_={c: getattr(stmt.excluded, c) for c in update_columns})
    else:
        stmt = stmt.on_conflict_do_nothing(index_elements=list(key))
    session.execute(stmt, list(rows))


# -- DRAIN --

# Modules whose ``@handles`` writers the drainer needs (imported on first use).
HANDLER_MODULES = ("risk_tasks.action_records",)


# Seconds a drain's per-stream lock lives without being extended (each batch extends it).
# The lock only spares other drainers a wasted turn: the cursor row is read FOR UPDATE,
# so two drainers never write a record twice. It is short because a drainer that dies
# holding it (its worker killed, or Redis restarting under it, which keeps the key
# through the AOF) stops every drain until it expires: with 120 s it held the audit
# trail back for two minutes after a Redis restart.
LOCK_TTL = 10


class Drainer:
    def __init__(self, client: redis.Redis, session_factory: sessionmaker[Session],
                 batch: int = 2000, lock_ttl: float = LOCK_TTL) -> None:
        import importlib

        for module in HANDLER_MODULES:
            importlib.import_module(module)
        self.redis = client
        self.sessions = session_factory
        self.batch = batch
        self.lock_ttl = lock_ttl

    def backlog(self) -> dict[str, int]:
        """Records waiting per stream (what ``risk_audit_backlog`` reports)."""
        pipe = self.redis.pipeline(transaction=False)
        for stream in STREAMS:
            pipe.xlen(stream)
        return dict(zip(STREAMS, pipe.execute()))

    def drain(self, budget_seconds: float = 0.9, streams: Iterable[str] = STREAMS) -> dict[str, int]:
        """Drain each stream until it is empty or the time budget is spent.

        A Redis lock per stream keeps one drainer at a time; others return at once.
        """
        deadline = time.monotonic() + budget_seconds
        written = {}
        for stream in streams:
            lock = self.redis.lock(f"risk:drain-lock:{stream}", timeout=self.lock_ttl,
                                   blocking=False)
            if not lock.acquire():
                written[stream] = 0
                continue
            try:
                total = 0
                while True:
                    n = self.drain_once(stream)
                    total += n
                    if n < self.batch or time.monotonic() > deadline:
                        break
                    lock.extend(self.lock_ttl, replace_ttl=True)
                written[stream] = total
            finally:
                try:
                    lock.release()
                except redis.exceptions.LockError:
                    log.warning("drain lock of %s expired before release", stream)
        return written

    def drain_once(self, stream: str) -> int:
        """One batch of ``stream`` into the database; returns the records written."""
        with self.sessions() as session:
            with session.begin():
                cursor = session.get(t.JournalCursorRow, stream, with_for_update=True)
                last = cursor.last_id if cursor is not None else "0-0"
                entries = self.redis.xrange(stream, min=f"({last}", count=self.batch)
                if not entries:
                    return 0
                records = []
                for eid, fields in entries:
                    try:
                        records.append((eid.decode(), orjson.loads(fields[b"d"])))
                    except (KeyError, orjson.JSONDecodeError) as exc:
                        self._refuse(session, stream, eid.decode(), fields, exc)
                self.write(session, stream, records)
                new_last = entries[-1][0].decode()
                now = datetime.now(timezone.utc)
                if cursor is None:
                    session.add(t.JournalCursorRow(stream=stream, last_id=new_last,
                                                   records=len(entries), updated_at=now))
                else:
                    cursor.last_id = new_last
                    cursor.records += len(entries)
                    cursor.updated_at = now
        # Committed: what is at or before the cursor may go (MINID keeps ids >= it).
        ms, seq = new_last.split("-")
        self.redis.xtrim(stream, minid=f"{ms}-{int(seq) + 1}", approximate=False)
        return len(entries)

    def write(self, session: Session, stream: str, records: list[Record]) -> None:
        try:
            with session.begin_nested():
                self._write_all(session, stream, records)
        except REFUSED as exc:
            log.error("journal batch of %s refused (%s); writing records one by one",
                      stream, exc.__class__.__name__)
            for record in records:
                try:
                    with session.begin_nested():
                        self._write_all(session, stream, [record])
                except REFUSED as one_exc:
                    self._refuse(session, stream, record[0], record[1], one_exc)

    def _write_all(self, session: Session, stream: str, records: list[Record]) -> None:
        if stream == keys.AUDIT_STREAM:
            write_order_checks(session, records)
            return
        groups: dict[str, list[Record]] = defaultdict(list)
        for record in records:
            groups[record[1].get("t", "?")].append(record)
        for kind in sorted(groups, key=lambda k: _HANDLERS.get(k, (10_000,))[0]):
            handler = _HANDLERS.get(kind)
            if handler is None:
                raise RecordError(f"unknown journal record kind {kind!r}")
            handler[1](session, groups[kind])

    @staticmethod
    def _refuse(session: Session, stream: str, eid: str, payload: Any, exc: Exception) -> None:
        """Keep a record the database refused, with its error, and move on."""
        log.error("journal record %s of %s refused: %s", eid, stream, exc)
        if isinstance(payload, dict):
            payload = {k.decode() if isinstance(k, bytes) else k:
                       v.decode(errors="replace") if isinstance(v, bytes) else v
                       for k, v in payload.items()}
        upsert(session, t.DeadLetterRow, [{
            "dead_letter_id": f"journal:{stream}:{eid}", "task_name": f"journal:{stream}",
            "args": [payload], "kwargs": {}, "idempotency_key": eid,
            "error": f"{exc.__class__.__name__}: {str(exc)[:2000]}", "traceback": None,
            "attempts": 1, "status": "dead", "created_at": datetime.now(timezone.utc),
        }], ["dead_letter_id"])


def is_outage(exc: BaseException) -> bool:
    """An error that means the database is unreachable (retry later, lose nothing)."""
    return isinstance(exc, (OperationalError, ConnectionError, OSError))


# -- WRITERS --

def write_order_checks(session: Session, records: list[Record]) -> None:
    rows = []
    for eid, rec in records:
        result = rec.get("r") or {}
        request = rec.get("o")
        req = request if isinstance(request, dict) else {}
        rows.append({
            "journal_id": eid,
            "order_id": short(result.get("order_id"), 128),
            "account_id": short(result.get("account_id"), 128),
            "symbol": short(req.get("symbol"), 32),
            "side": short(req.get("side"), 4),
            "order_type": short(req.get("order_type"), 8),
            "quantity": dec(req.get("quantity")),
            "price": dec(req.get("price")),
            "approved": bool(result.get("approved")),
            "rejection_reason": short(result.get("rejection_reason"), 32),
            "message": result.get("message"),
            "violations": result.get("violations"),
            "post_trade_metrics": result.get("post_trade_metrics") or None,
            "request": request,
            "processing_time_us": int(result.get("processing_time_us") or 0),
            "worker": short(rec.get("w"), 128),
            "checked_at": ts(rec.get("ts")),
        })
    upsert(session, t.OrderCheckRow, rows, ["journal_id"])


@handles("account", order=10)
def write_accounts(session: Session, records: list[Record]) -> None:
    accounts: dict[str, dict] = {}
    positions: dict[tuple[str, str], dict] = {}
    fills, changes = [], []
    for _, rec in records:
        at = ts(rec["at"])
        a = rec["account"]
        accounts[a["account_id"]] = {
            "account_id": a["account_id"], "balance": Decimal(a["balance"]),
            "status": a["status"], "peak_equity": Decimal(a["peak_equity"]),
            "daily_start_equity": Decimal(a["daily_start_equity"]),
            "max_leverage": dec(a.get("max_leverage")), "version": a["version"],
            "updated_at": at,
        }
        for symbol, (qty, entry) in (rec.get("positions") or {}).items():
            positions[(a["account_id"], symbol)] = {
                "account_id": a["account_id"], "symbol": symbol, "quantity": Decimal(qty),
                "entry_price": Decimal(entry), "updated_at": at,
            }
        for fill in ([rec["fill"]] if rec.get("fill") else []) + (rec.get("fills") or []):
            fills.append({
                "fill_id": fill["fill_id"], "account_id": a["account_id"],
                "symbol": fill["symbol"], "side": fill["side"],
                "quantity": Decimal(fill["quantity"]), "price": Decimal(fill["price"]),
                "realized_pnl": Decimal(fill["realized_pnl"]), "source": fill["source"],
                "reference": fill.get("reference"), "filled_at": at,
            })
        if rec.get("state_change"):
            changes.append(_state_change_row(rec["state_change"]))
    upsert(session, t.AccountRow, list(accounts.values()), ["account_id"],
           ["balance", "status", "peak_equity", "daily_start_equity", "max_leverage",
            "version", "updated_at"])
    open_rows = [p for p in positions.values() if p["quantity"]]
    flat = [k for k, p in positions.items() if not p["quantity"]]
    upsert(session, t.PositionRow, open_rows, ["account_id", "symbol"],
           ["quantity", "entry_price", "updated_at"])
    for account_id, symbol in flat:
        session.execute(delete(t.PositionRow).where(t.PositionRow.account_id == account_id,
                                                    t.PositionRow.symbol == symbol))
    upsert(session, t.FillRow, fills, ["fill_id"])
    if changes:
        session.execute(t.TradingStateChangeRow.__table__.insert(), changes)


def _state_change_row(c: dict) -> dict:
    return {"scope": c["scope"], "account_id": c.get("account_id"), "old_state": c.get("old"),
            "new_state": c["new"], "reason": c.get("reason") or "", "changed_by": c.get("by") or "",
            "stop_id": c.get("stop_id"), "changed_at": ts(c["at"])}


@handles("trading_state", order=20)
def write_trading_states(session: Session, records: list[Record]) -> None:
    session.execute(t.TradingStateChangeRow.__table__.insert(),
                    [_state_change_row(rec) for _, rec in records])


@handles("estop", order=30)
def write_emergency_stops(session: Session, records: list[Record]) -> None:
    upsert(session, t.EmergencyStopRow, [{
        "stop_id": rec["stop_id"], "scope": rec["scope"], "account_id": rec.get("account_id"),
        "reason": rec["reason"], "triggered_by": rec["triggered_by"],
        "triggered_at": ts(rec["at"]), "status": "active",
        "accounts_to_unwind": int(rec.get("accounts_to_unwind") or 0),
        "orders_canceled": 0, "positions_closed": 0, "completed": False,
        "snapshot": rec.get("snapshot"),
    } for _, rec in records], ["stop_id"])


@handles("operator_action", order=40)
def write_operator_actions(session: Session, records: list[Record]) -> None:
    session.execute(t.OperatorActionRow.__table__.insert(), [{
        "action": rec["action"], "operator": str(rec["operator"])[:128],
        "allowed": bool(rec["allowed"]), "reason": rec.get("reason"),
        "details": rec.get("details"), "acted_at": ts(rec["at"]),
    } for _, rec in records])


@handles("violations", order=50)
def write_violations(session: Session, records: list[Record]) -> None:
    rows = []
    for _, rec in records:
        for v in rec["items"]:
            rows.append({
                "account_id": v["account_id"], "policy_name": v["policy"],
                "policy_type": v["policy_type"], "metric": v["metric"],
                "value": dec(v.get("value")), "operator": v["operator"],
                "threshold": Decimal(str(v["threshold"])), "source": rec.get("source", "monitor"),
                "tick_ts": dec(rec.get("tick_ts")), "detected_at": ts(rec["at"]),
            })
    if rows:
        session.execute(t.ViolationRow.__table__.insert(), rows)


@handles("peaks", order=60)
def write_peaks(session: Session, records: list[Record]) -> None:
    """Peaks the monitor raised: kept so that a rebuild from the database keeps them."""
    table = t.AccountRow.__table__
    stmt = (update(table)
            .where(table.c.account_id == bindparam("a"), table.c.peak_equity < bindparam("p"))
            .values(peak_equity=bindparam("p")))
    rows = [{"a": account_id, "p": Decimal(peak)} for _, rec in records
            for account_id, peak in rec["items"]]
    if rows:
        session.connection().execute(stmt, rows)


@handles("estop_progress", order=800)
def write_stop_progress(session: Session, records: list[Record]) -> None:
    """Unwind progress: counts add up (each unwind step reports what it did)."""
    for _, rec in records:
        values: dict[str, Any] = {}
        if "accounts_to_unwind" in rec:
            values["accounts_to_unwind"] = rec["accounts_to_unwind"]
        if rec.get("orders_canceled"):
            values["orders_canceled"] = t.EmergencyStopRow.orders_canceled + rec["orders_canceled"]
        if rec.get("positions_closed"):
            values["positions_closed"] = (t.EmergencyStopRow.positions_closed
                                          + rec["positions_closed"])
        if rec.get("completed"):
            values["completed"] = True
            values["completed_at"] = ts(rec["at"])
        if values:
            session.execute(update(t.EmergencyStopRow)
                            .where(t.EmergencyStopRow.stop_id == rec["stop_id"]).values(**values))


@handles("estop_resolved", order=900)
def write_stop_resolutions(session: Session, records: list[Record]) -> None:
    for _, rec in records:
        session.execute(update(t.EmergencyStopRow)
                        .where(t.EmergencyStopRow.stop_id == rec["stop_id"])
                        .values(status="resolved", resolved_by=rec["resolved_by"],
                                resolved_at=ts(rec["at"]), resolve_reason=rec.get("reason")))


def cursor_positions(session: Session) -> dict[str, str]:
    return dict(session.execute(select(t.JournalCursorRow.stream, t.JournalCursorRow.last_id)).all())
