"""Journal tasks: drain the Redis journals into PostgreSQL; reload policies."""

from __future__ import annotations

import logging

from risk_tasks.journal import is_outage
from risk_tasks.logs import log_event
from risk_tasks.policy_store import publish_policies
from risk_tasks.runtime import runtime
from risk_tasks.tasks.base import risk_task

log = logging.getLogger(__name__)


@risk_task("risk.drain_journal", soft_time_limit=50, time_limit=60)
def drain_journal() -> dict:
    """Write the waiting journal records to the database (beat: every second).

    While the database is away this returns at once and the records wait in Redis; the
    next run after it comes back writes them all, exactly once.
    """
    rt = runtime()
    try:
        written = rt.drainer.drain(budget_seconds=0.9)
    except Exception as exc:
        if not is_outage(exc):
            raise
        log_event(log, "journal drain waiting for the database", logging.WARNING,
                  error=str(exc).splitlines()[0][:300])
        return {"ok": False, "error": "database unavailable", "backlog": rt.drainer.backlog()}
    return {"ok": True, "written": written, "backlog": rt.drainer.backlog()}


@risk_task("risk.refresh_policies")
def refresh_policies() -> dict:
    """Publish the database's policies to Redis, where every worker reads them."""
    rt = runtime()
    try:
        count = publish_policies(rt.sessions, rt.store)
    except Exception as exc:
        if not is_outage(exc):
            raise
        return {"ok": False, "error": "database unavailable"}
    return {"ok": True, "policies": count}
