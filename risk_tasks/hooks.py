"""What follows an emergency stop, wherever it was triggered (task, CLI, monitor):
unwind the exposure of the stopped account, or of every account for a global stop,
fanned out one ``risk.unwind_account`` per account over the ``unwind`` queue.
"""

from __future__ import annotations

from typing import Any


def accounts_with_exposure(store) -> list[str]:  # noqa: ANN001
    """Every account holding at least one position (one pipelined pass per shard)."""
    from risk_tasks.state import keys

    found = []
    for shard in range(store.settings.shards):
        ids = store.shard_account_ids(shard)
        pipe = store.redis.pipeline(transaction=False)
        for account_id in ids:
            pipe.hlen(keys.positions(account_id))
        found += [a for a, n in zip(ids, pipe.execute()) if n]
    return found


def after_emergency_stop(rt, result: dict[str, Any]) -> int:  # noqa: ANN001
    """Enqueue the unwinds of a new stop; returns how many. Nothing for a repeat stop."""
    if not result.get("success") or not result.get("created"):
        return 0
    from risk_tasks.app import app

    if result["scope"] == "account":
        targets = [result["account_id"]]
    else:
        targets = accounts_with_exposure(rt.store)
    stop_id = result["stop_id"]
    rt.store.journal({"t": "estop_progress", "stop_id": stop_id,
                      "accounts_to_unwind": len(targets), "at": rt.clock.time()})
    for account_id in targets:
        app.send_task("risk.unwind_account", args=[account_id, stop_id])
    return len(targets)
