"""Unwind tasks (queue ``unwind``): ``risk.unwind_account`` after an emergency stop, and
``risk.unwind_shard``, the fan-out of a global stop over one account shard.

Both are idempotent (per ``(stop_id, account_id)`` and per ``(stop_id, shard)``) and
``acks_late``; the unwind of an account shares the account's lease with liquidation,
so the two never close the same position twice.
"""

from __future__ import annotations

from typing import Any

from risk_tasks import actions, hooks
from risk_tasks.engine.validation import InvalidInput, identifier
from risk_tasks.failures import BadInput
from risk_tasks.gateways import gateway_for
from risk_tasks.runtime import runtime
from risk_tasks.tasks.base import risk_task


def _keys(account_id: Any = None, stop_id: Any = None, *_: Any, **__: Any) -> tuple[Any, Any]:
    if isinstance(stop_id, str) and isinstance(account_id, str):
        return f"{stop_id}:{account_id}", account_id
    return None, account_id


def _shard_keys(stop_id: Any = None, shard: Any = None, *_: Any, **__: Any) -> tuple[Any, Any]:
    return f"{stop_id}:shard:{shard}", None


@risk_task("risk.unwind_account", acks_late=True, reject_on_worker_lost=True,
           dead_letters=True, idempotency_key=_keys, soft_time_limit=240, time_limit=280)
def unwind_account(account_id: Any, stop_id: Any) -> dict:
    """Cancel the account's orders and close its positions (in slices of
    ``RISK_UNWIND_SLICE_FRACTION`` with ``RISK_UNWIND_PAUSE_SECONDS`` between rounds);
    progress goes to the emergency stop ``stop_id``."""
    rt = runtime()
    account, stop = actions.validate_unwind(account_id, stop_id)
    return actions.Unwind(rt, gateway_for(rt), account, stop).run()


@risk_task("risk.unwind_shard", acks_late=True, reject_on_worker_lost=True,
           dead_letters=True, idempotency_key=_shard_keys, soft_time_limit=240,
           time_limit=280)
def unwind_shard(stop_id: Any, shard: Any) -> dict:
    """List the accounts of ``shard`` with exposure and send their unwinds (global stop)."""
    rt = runtime()
    try:
        stop = identifier({"stop_id": stop_id}, "stop_id", max_length=64)
    except InvalidInput as exc:
        raise BadInput(str(exc)) from exc
    if isinstance(shard, bool) or not isinstance(shard, int) or \
            not 0 <= shard < rt.settings.shards:
        raise BadInput(f"shard: must be an integer in [0, {rt.settings.shards})")
    sent = hooks.unwind_shard(rt, stop, shard)
    return {"ok": True, "stop_id": stop, "shard": shard, "unwinds_enqueued": sent}
