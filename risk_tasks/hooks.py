"""What follows an emergency stop, wherever it was triggered (task, CLI, monitor):
unwind the exposure of the stopped account, or of every account for a global stop,
fanned out over the ``unwind`` queue.

An account stop sends its one ``risk.unwind_account``. A global stop sends one
``risk.unwind_shard`` per account shard; each lists the accounts of its shard that hold
positions and sends their ``risk.unwind_account`` messages. No single task walks a
million accounts, and the stop waits for exactly what was listed: it expects one marker
per shard first, and each shard adds its accounts before it sends them
(``actions.count_shard``), so the stop cannot look complete while a shard is unlisted.
"""

from __future__ import annotations

from typing import Any

from risk_tasks import actions


def exposed_accounts(store, shard: int) -> list[str]:  # noqa: ANN001
    """The accounts of one shard holding at least one position (one pipelined pass)."""
    from risk_tasks.state import keys

    ids = store.shard_account_ids(shard)
    if not ids:
        return []
    pipe = store.redis.pipeline(transaction=False)
    for account_id in ids:
        pipe.hlen(keys.positions(account_id))
    return [a for a, n in zip(ids, pipe.execute()) if n]


def accounts_with_exposure(store) -> list[str]:  # noqa: ANN001
    """Every account holding at least one position (for tools and tests; the stop itself
    lists them shard by shard, in parallel)."""
    return [a for shard in range(store.settings.shards) for a in exposed_accounts(store, shard)]


def after_emergency_stop(rt, result: dict[str, Any]) -> int:  # noqa: ANN001
    """Enqueue the unwinds of a new stop; returns how many messages were sent (the
    account's unwind, or one listing task per shard). Nothing for a repeat stop."""
    if not result.get("success") or not result.get("created"):
        return 0
    from risk_tasks.app import app, send_many

    stop_id = result["stop_id"]
    if result["scope"] == "account":
        rt.store.journal({"t": "estop_progress", "stop_id": stop_id,
                          "accounts_to_unwind": 1, "at": rt.clock.time()})
        actions.expect_unwinds(rt, stop_id, 1)
        app.send_task("risk.unwind_account", args=[result["account_id"], stop_id])
        return 1
    shards = rt.settings.shards
    actions.expect_unwinds(rt, stop_id, shards)  # one marker per shard, then its accounts
    send_many("risk.unwind_shard", [([stop_id, shard], repr([stop_id, shard]))
                                    for shard in range(shards)])
    return shards


def unwind_shard(rt, stop_id: str, shard: int) -> int:  # noqa: ANN001
    """List one shard's exposed accounts for a global stop and send their unwinds;
    returns how many. Safe to repeat (a redelivery sends the first list again)."""
    from risk_tasks.app import send_many

    targets = actions.count_shard(rt, stop_id, shard, exposed_accounts(rt.store, shard))
    send_many("risk.unwind_account", [([account_id, stop_id], repr([account_id, stop_id]))
                                      for account_id in targets])
    actions.shard_counted(rt, stop_id, shard)
    return len(targets)
