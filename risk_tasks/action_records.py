"""Journal writers for action records (liquidations, alerts, dead letters, unwinds).

Imported by the drainer (``risk_tasks.journal.HANDLER_MODULES``) so that every record
kind has its writer registered before a batch is written.

Every writer is idempotent: rows are keyed by a business id (``episode_id``,
``(episode_id, step)``, ``alert_id``, ``dead_letter_id``), so a record written twice
(an action that journaled a step again after a crash, or a batch written one by one
after a refusal) changes nothing the second time. Records of one kind in one batch are
merged per key first, in stream order, because PostgreSQL refuses an
``INSERT ... ON CONFLICT DO UPDATE`` that touches one row twice.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import case, func, or_, update
from sqlalchemy.orm import Session

from models import tables as t
from risk_tasks.journal import Record, dec, handles, short, ts, upsert

FINAL_STATUSES = ("completed", "skipped")


def _insert(session: Session):  # noqa: ANN202
    if session.bind.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert


# -- LIQUIDATIONS --

@handles("liquidation", order=700)
def write_liquidations(session: Session, records: list[Record]) -> None:
    """One row per episode, upserted: later records fill in what earlier ones lacked; a
    finished episode (completed, skipped) is never set back to running or failed."""
    merged: dict[str, dict[str, Any]] = {}
    for _, rec in records:
        row = {
            "episode_id": rec["episode_id"], "account_id": rec["account_id"],
            "reason": str(rec.get("reason") or ""), "status": str(rec["status"])[:16],
            "equity_before": dec(rec.get("equity_before")),
            "maintenance_before": dec(rec.get("maintenance_before")),
            "equity_after": dec(rec.get("equity_after")),
            "realized_pnl": dec(rec.get("realized_pnl")),
            "positions_closed": rec.get("positions_closed"),
            "orders_canceled": rec.get("orders_canceled"),
            "attempts": int(rec.get("attempts") or 0),
            "error": rec.get("error"),
            "started_at": ts(rec.get("started_at") or rec["at"]),
            "completed_at": ts(rec.get("completed_at")),
        }
        earlier = merged.get(row["episode_id"])
        if earlier is not None:
            if earlier["status"] in FINAL_STATUSES and row["status"] not in FINAL_STATUSES:
                row["status"] = earlier["status"]
            row = {k: (v if v is not None else earlier[k]) for k, v in row.items()}
            row["attempts"] = max(row["attempts"], earlier["attempts"])
        merged[row["episode_id"]] = row
    rows = list(merged.values())
    for row in rows:
        row["orders_canceled"] = int(row["orders_canceled"] or 0)
    insert = _insert(session)
    table = t.LiquidationRow.__table__
    stmt = insert(table)
    new = stmt.excluded
    keep = ("equity_before", "maintenance_before", "equity_after", "realized_pnl",
            "positions_closed", "error", "completed_at")
    set_ = {c: func.coalesce(getattr(new, c), table.c[c]) for c in keep}
    # (no IN: its expanding parameters cannot go into an executemany)
    old_final = or_(*[table.c.status == s for s in FINAL_STATUSES])
    new_final = or_(*[new.status == s for s in FINAL_STATUSES])
    set_["status"] = case((old_final & ~new_final, table.c.status), else_=new.status)
    set_["attempts"] = func.greatest(table.c.attempts, new.attempts) \
        if session.bind.dialect.name == "postgresql" else func.max(table.c.attempts, new.attempts)
    set_["orders_canceled"] = case((new.orders_canceled > 0, new.orders_canceled),
                                   else_=table.c.orders_canceled)
    session.execute(stmt.on_conflict_do_update(index_elements=["episode_id"], set_=set_), rows)


@handles("liquidation_step", order=710)
def write_liquidation_steps(session: Session, records: list[Record]) -> None:
    """Each step once, by ``(episode_id, step)`` (step 0 is the order cancellation)."""
    rows: dict[tuple[str, int], dict[str, Any]] = {}
    for _, rec in records:
        key = (rec["episode_id"], int(rec["step"]))
        rows.setdefault(key, {
            "episode_id": key[0], "step": key[1], "action": str(rec["action"])[:32],
            "symbol": short(rec.get("symbol"), 32), "quantity": dec(rec.get("quantity")),
            "price": dec(rec.get("price")), "realized_pnl": dec(rec.get("realized_pnl")),
            "at": ts(rec["at"]),
        })
    upsert(session, t.LiquidationStepRow, list(rows.values()), ["episode_id", "step"])


# -- ALERTS --

@handles("alert", order=720)
def write_alerts(session: Session, records: list[Record]) -> None:
    """Every alert once by ``alert_id``, suppressed duplicates included; a later record of
    the same alert (a retry that reached more sinks) updates ``delivered_to``."""
    rows: dict[str, dict[str, Any]] = {}
    for _, rec in records:
        alert = rec["alert"]
        rows[alert["alert_id"]] = {
            "alert_id": alert["alert_id"], "level": alert["level"], "kind": alert["kind"],
            "policy": short(alert.get("policy"), 255),
            "account_id": short(alert.get("account_id"), 128),
            "message": alert["message"], "payload": alert,
            "delivered_to": list(rec.get("delivered_to") or []),
            "deduplicated": bool(rec.get("deduplicated")),
            "created_at": ts(rec.get("at") or alert.get("at")),
        }
    upsert(session, t.AlertRow, list(rows.values()), ["alert_id"], ["delivered_to"])


# -- DEAD LETTERS --

@handles("dead_letter", order=730)
def write_dead_letters(session: Session, records: list[Record]) -> None:
    """Each dead letter once, by ``dead_letter_id`` (the failed task's id)."""
    rows: dict[str, dict[str, Any]] = {}
    for _, rec in records:
        key = rec["dead_letter_id"]
        args = rec.get("args")
        kwargs = rec.get("kwargs")
        rows.setdefault(key, {
            "dead_letter_id": key, "task_id": short(rec.get("task_id"), 64),
            "task_name": str(rec["task_name"])[:128],
            "args": args if isinstance(args, list) else [args],
            "kwargs": kwargs if isinstance(kwargs, dict) else {},
            "idempotency_key": (str(rec["idempotency_key"])[:160]
                                if rec.get("idempotency_key") is not None else None),
            "error": str(rec.get("error") or ""), "traceback": rec.get("traceback"),
            "attempts": int(rec.get("attempts") or 1), "status": "dead",
            "created_at": ts(rec["at"]),
        })
    upsert(session, t.DeadLetterRow, list(rows.values()), ["dead_letter_id"])


# -- EMERGENCY STOPS --

@handles("estop_expected", order=790)
def write_stop_expectations(session: Session, records: list[Record]) -> None:
    """A global stop counts the accounts to unwind shard by shard (``risk.unwind_shard``);
    each shard journals its count once (the count is claimed in Redis first)."""
    for _, rec in records:
        session.execute(update(t.EmergencyStopRow)
                        .where(t.EmergencyStopRow.stop_id == rec["stop_id"])
                        .values(accounts_to_unwind=t.EmergencyStopRow.accounts_to_unwind
                                + int(rec["accounts"])))
