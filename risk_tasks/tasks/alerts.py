"""Alert task (queue ``alerts``): ``risk.send_alert``.

It delivers one alert to the configured sinks, de-duplicated across
instances, and stores it (``risk_tasks.alert_delivery``). A webhook that is down is
retried with back-off; an alert that still cannot go out is dead-lettered (without a
dead-letter alert of its own, which could only fail the same way).
"""

from __future__ import annotations

from typing import Any

from risk_tasks import alert_delivery
from risk_tasks.runtime import runtime
from risk_tasks.tasks.base import risk_task


def _keys(alert: Any = None, *_: Any, **__: Any) -> tuple[Any, Any]:
    if isinstance(alert, dict):
        return alert.get("alert_id"), alert.get("account_id")
    return None, None


@risk_task("risk.send_alert", acks_late=True, reject_on_worker_lost=True, dead_letters=True,
           idempotency_key=_keys, soft_time_limit=30, time_limit=45)
def send_alert(alert: Any) -> dict:
    """Deliver ``alert`` (see ``risk_tasks.alerting`` for its shape) to the configured
    sinks, once per alert id and once per policy and account within the window."""
    return alert_delivery.deliver(runtime(), alert)
