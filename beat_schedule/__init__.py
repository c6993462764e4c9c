"""The beat schedule, as data. Every entry names its queue and carries ``expires`` so
that a backlog never piles up duplicates of a periodic job.

``risk.monitor_tick`` is aligned to whole seconds and gets its ``tick_ts`` (that second)
when it is sent, so two beats running by mistake send the same ticks, which the
monitor runs once (see risk_tasks/monitor/ticks.py).
"""

from celery.beat import BeatLazyFunc
from celery.schedules import crontab

from beat_schedule.aligned import aligned, tick_ts

SCHEDULE = {
    "monitor-tick": {
        "task": "risk.monitor_tick",
        "schedule": aligned(1.0),
        "args": (BeatLazyFunc(tick_ts, 1.0),),
        "options": {"queue": "monitor", "expires": 1.0},
    },
    "reset-daily-start-equity": {
        "task": "risk.reset_daily",
        "schedule": crontab(minute=0, hour=0),
        "options": {"queue": "monitor", "expires": 3600},
    },
    "drain-journal": {
        "task": "risk.drain_journal",
        "schedule": 1.0,
        "options": {"queue": "ingest", "expires": 5},
    },
    # Compliance reports of the last complete hour and day (UTC), a few minutes after
    # it ends so that the journal drain has written its last records.
    "compliance-report-hourly": {
        "task": "risk.compliance_report",
        "schedule": crontab(minute=5),
        "args": ("hourly",),
        "options": {"queue": "reports", "expires": 3000},
    },
    "compliance-report-daily": {
        "task": "risk.compliance_report",
        "schedule": crontab(minute=15, hour=0),
        "args": ("daily",),
        "options": {"queue": "reports", "expires": 6 * 3600},
    },
    "refresh-policies": {
        "task": "risk.refresh_policies",
        "schedule": 30.0,
        "options": {"queue": "ingest", "expires": 25},
    },
}
