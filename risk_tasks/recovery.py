"""Rebuild the hot state in Redis from PostgreSQL after Redis lost it.

PostgreSQL holds everything that reached it through the journal: symbols, policies,
accounts with their balances, statuses and peaks, positions, trading-state history.
What it cannot hold is what Redis lost before the journal was drained (with
``appendfsync everysec``, at most about a second plus the drain backlog), idempotency
records of recent order ids, rate windows and the monitor's per-tick peaks (the peaks
the monitor last journalled are used instead).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from models import tables as t
from risk_tasks.policy_store import publish_policies, symbol_from_row
from risk_tasks.state import keys


def rebuild_state(rt) -> dict[str, Any]:  # noqa: ANN001
    store = rt.store
    r = store.redis
    shards = store.settings.shards
    with rt.sessions() as session:
        specs = [symbol_from_row(row) for row in session.scalars(select(t.SymbolRow))]
        account_rows = list(session.scalars(select(t.AccountRow).order_by(t.AccountRow.account_id)))
        positions: dict[str, list[t.PositionRow]] = {}
        for row in session.scalars(select(t.PositionRow)):
            positions.setdefault(row.account_id, []).append(row)
        last_global = session.scalar(
            select(t.TradingStateChangeRow).where(t.TradingStateChangeRow.scope == "global")
            .order_by(t.TradingStateChangeRow.changed_at.desc(), t.TradingStateChangeRow.id.desc())
            .limit(1))
    pipe = r.pipeline(transaction=False)
    for shard in range(shards):
        pipe.delete(keys.shard_members(shard), keys.shard_changes(shard), keys.shard_hwm(shard),
                    keys.shard_day(shard), keys.shard_dayid(shard))
    pipe.delete(keys.NON_ACTIVE)
    pipe.execute()
    if specs:
        store.put_symbols(specs)
    publish_policies(rt.sessions, store)
    slots = [0] * shards
    pipe = r.pipeline(transaction=False)
    for i, row in enumerate(account_rows):
        shard = keys.shard_of(row.account_id, shards)
        slot = slots[shard]
        slots[shard] += 1
        pipe.delete(keys.account(row.account_id), keys.positions(row.account_id))
        pipe.rpush(keys.shard_members(shard), row.account_id)
        pipe.hset(keys.account(row.account_id), mapping={
            "balance": str(row.balance), "status": row.status,
            "peak_equity": str(row.peak_equity), "daily_start_equity": str(row.daily_start_equity),
            "max_leverage": "" if row.max_leverage is None else str(row.max_leverage),
            "shard": shard, "slot": slot, "ver": row.version,
            "updated_at": repr(row.updated_at.timestamp()),
            "created_at": repr(row.updated_at.timestamp()),
        })
        if row.status != "ACTIVE":
            pipe.sadd(keys.NON_ACTIVE, row.account_id)
        held = positions.get(row.account_id, [])
        if held:
            pipe.hset(keys.positions(row.account_id),
                      mapping={p.symbol: f"{p.quantity}|{p.entry_price}" for p in held})
        if i % 1000 == 999:
            pipe.execute()
            pipe = r.pipeline(transaction=False)
    if last_global is not None:
        pipe.hset(keys.PLATFORM_STATE, mapping={
            "state": last_global.new_state, "reason": last_global.reason,
            "by": last_global.changed_by, "at": repr(last_global.changed_at.timestamp()),
            "stop_id": last_global.stop_id or ""})
        pipe.hincrby(keys.PLATFORM_STATE, "ver", 1)
    pipe.execute()
    return {"symbols": len(specs), "accounts": len(account_rows),
            "positions": sum(len(v) for v in positions.values()),
            "platform_state": last_global.new_state if last_global else "ACTIVE"}
