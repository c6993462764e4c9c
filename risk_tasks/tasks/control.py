"""Control tasks (queue ``control``): emergency stop, resume, status."""

from __future__ import annotations

from typing import Any

from risk_tasks import control
from risk_tasks.hooks import after_emergency_stop
from risk_tasks.runtime import runtime
from risk_tasks.tasks.base import risk_task


@risk_task("risk.trigger_emergency_stop", ignore_result=False)
def trigger_emergency_stop(reason: Any, triggered_by: Any, scope: Any = "global",
                           account_id: Any = None) -> dict:
    """Halt trading (platform or one account), then unwind its exposure."""
    rt = runtime()
    result = control.trigger_emergency_stop(rt.store, reason, triggered_by, scope, account_id)
    result["unwinds_enqueued"] = after_emergency_stop(rt, result)
    return result


@risk_task("risk.re_enable_trading", ignore_result=False)
def re_enable_trading(authorized_by: Any, reason: Any, scope: Any = "global",
                      account_id: Any = None) -> dict:
    return control.re_enable_trading(runtime().store, authorized_by, reason, scope, account_id)


@risk_task("risk.emergency_status", ignore_result=False)
def emergency_status() -> dict:
    store = runtime().store
    return {"success": True, "message": "ok", "status": control.emergency_status(store)}
