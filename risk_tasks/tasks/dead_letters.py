"""Dead-letter task (queue ``dead_letter``): ``risk.dead_letter``.

Every dead-lettered task (``risk_tasks.dlq``) is also sent here, for whoever watches the
queue. The task logs it, and journals it when the task that failed could not (Redis was
away at that moment); the journal writer keeps each dead letter once.
"""

from __future__ import annotations

import logging
from typing import Any

import redis

from risk_tasks.logs import log_event
from risk_tasks.runtime import runtime
from risk_tasks.tasks.base import risk_task

log = logging.getLogger(__name__)

DEAD_LETTER_FIELDS = ("dead_letter_id", "task_name", "args", "kwargs", "error", "attempts",
                      "at")


@risk_task("risk.dead_letter", acks_late=True, autoretry_for=(redis.ConnectionError,
           redis.TimeoutError), retry_backoff=True, retry_backoff_max=60, max_retries=10,
           soft_time_limit=20, time_limit=30)
def dead_letter(entry: Any) -> dict:
    """Log a dead-lettered task; journal it if its failing task could not."""
    if not isinstance(entry, dict) or any(f not in entry for f in DEAD_LETTER_FIELDS):
        log_event(log, "malformed dead letter dropped", logging.ERROR, entry=repr(entry)[:500])
        return {"ok": False, "error": "malformed dead letter"}
    journaled = bool(entry.get("journaled"))
    if not journaled:
        record = {k: v for k, v in entry.items() if k != "journaled"}
        runtime().store.journal({"t": "dead_letter", **record})
    log_event(log, "dead letter received", logging.ERROR,
              dead_letter_id=entry["dead_letter_id"], task_name=entry["task_name"],
              idempotency_key=entry.get("idempotency_key"), attempts=entry["attempts"],
              error=str(entry["error"])[:500], journaled_here=not journaled)
    return {"ok": True, "dead_letter_id": entry["dead_letter_id"], "journaled": not journaled}
