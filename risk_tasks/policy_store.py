"""Policies and symbols: PostgreSQL holds them, Redis carries them to every worker.

Edits (``riskctl policies``, ``riskctl load``) write the database and then publish to
Redis at once; ``risk.refresh_policies`` republishes every 30 s so that a change made
directly in the database reaches the workers too. A publish that changes nothing does
not bump the configuration version, so workers keep their cached copy.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Iterable, Mapping

import orjson
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from models import tables as t
from risk_tasks.engine.model import Policy, PolicyType, SymbolSpec
from risk_tasks.state import keys
from risk_tasks.state.codec import encode_symbol, policy_to_dict
from risk_tasks.state.store import StateStore


def policy_from_row(row: t.PolicyRow) -> Policy:
    return Policy(name=row.name, type=PolicyType(row.type), metric=row.metric,
                  operator=row.operator, threshold=row.threshold, scope=row.scope,
                  scope_id=row.scope_id, enabled=row.enabled, priority=row.priority,
                  version=row.version)


def symbol_from_row(row: t.SymbolRow) -> SymbolSpec:
    return SymbolSpec(row.symbol, row.imr, row.mmr, row.price_collar, row.max_order_notional)


def publish_policies(sessions: sessionmaker[Session], store: StateStore) -> int:
    """Copy symbols and policies from the database to Redis if they differ."""
    with sessions() as session:
        policies = [policy_from_row(r) for r in session.scalars(
            select(t.PolicyRow).order_by(t.PolicyRow.priority.desc(), t.PolicyRow.name))]
        specs = [symbol_from_row(r) for r in session.scalars(select(t.SymbolRow))]
    pipe = store.redis.pipeline(transaction=False)
    pipe.get(keys.POLICIES).hgetall(keys.SYMBOLS)
    current_policies, current_specs = pipe.execute()
    wanted = orjson.dumps([policy_to_dict(p) for p in policies])
    if current_policies != wanted:
        store.put_policies(policies)
    changed = [s for s in specs if current_specs.get(s.symbol.encode()) != encode_symbol(s)]
    if changed:
        store.put_symbols(changed)
    return len(policies)


def save_symbols(session: Session, specs: Iterable[SymbolSpec]) -> None:
    from risk_tasks.journal import upsert

    now = datetime.now(timezone.utc)
    upsert(session, t.SymbolRow, [{
        "symbol": s.symbol, "imr": s.imr, "mmr": s.mmr, "price_collar": s.price_collar,
        "max_order_notional": s.max_order_notional, "updated_at": now} for s in specs],
        ["symbol"], ["imr", "mmr", "price_collar", "max_order_notional", "updated_at"])


def save_policy(session: Session, policy: Policy) -> t.PolicyRow:
    """Insert or update a policy by name; an update bumps its version."""
    row = session.scalar(select(t.PolicyRow).where(t.PolicyRow.name == policy.name))
    now = datetime.now(timezone.utc)
    if row is None:
        row = t.PolicyRow(name=policy.name, created_at=now, version=policy.version)
        session.add(row)
    else:
        row.version = (row.version or 0) + 1
    row.type = policy.type.value
    row.metric = policy.metric
    row.operator = policy.operator
    row.threshold = policy.threshold
    row.scope = policy.scope
    row.scope_id = policy.scope_id
    row.enabled = policy.enabled
    row.priority = policy.priority
    row.updated_at = now
    return row


def policy_row_dict(row: t.PolicyRow) -> dict[str, Any]:
    return {"id": row.id, "name": row.name, "type": row.type, "metric": row.metric,
            "operator": row.operator, "threshold": str(row.threshold), "scope": row.scope,
            "scope_id": row.scope_id, "enabled": row.enabled, "priority": row.priority,
            "version": row.version}


def changes_of(row: t.PolicyRow, updates: Mapping[str, Any]) -> dict[str, Any]:
    merged = policy_row_dict(row)
    merged.update(updates)
    merged.pop("id", None)
    return merged
