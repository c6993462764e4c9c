"""Report tasks (queue ``reports``): compliance reports from the system of record.

Idempotent by period: building the same period again replaces its files and its row,
so ``acks_late`` redelivery and a retried beat entry do no harm. A bad period is
answered once with ``{"success": false, ...}`` and never retried; the database being
away is retried with back-off (beat sends the next period anyway).
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.exc import OperationalError

from risk_tasks.logs import log_event
from risk_tasks.reports import ReportError, build_report
from risk_tasks.runtime import runtime
from risk_tasks.tasks.base import risk_task

log = logging.getLogger(__name__)


@risk_task("risk.compliance_report", ignore_result=False, acks_late=True,
           autoretry_for=(OperationalError,), max_retries=3, retry_backoff=10,
           retry_backoff_max=120, retry_jitter=True, soft_time_limit=240, time_limit=300)
def compliance_report(period: Any = "hourly", start: Any = None, end: Any = None) -> dict:
    """Build and store the report of ``period`` (``hourly``, ``daily`` or ``custom``)
    from ``start`` to ``end`` (ISO 8601, UTC); without them, the last complete hour or
    day. Returns the report's id, paths and headline figures."""
    rt = runtime()
    try:
        result = build_report(rt.sessions, rt.settings.report_dir, period, start, end)
    except ReportError as exc:
        log_event(log, "report refused", logging.WARNING, period=str(period)[:32],
                  error=str(exc))
        return {"success": False, "error": str(exc), "period": period, "start": start,
                "end": end}
    log_event(log, "report built", report_id=result["report_id"], period=result["period"],
              start=result["start"], end=result["end"], order_checks=result["order_checks"])
    return result
