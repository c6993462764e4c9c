"""The beat schedule, as data. Every entry names its queue and carries ``expires`` so
that a backlog never piles up duplicates of a periodic job.

``risk.monitor_tick`` gets its ``tick_ts`` from ``risk_tasks.beat.RiskScheduler``, which
stamps each tick with its scheduled second so that two beats produce the same tick.
"""

from celery.schedules import crontab

SCHEDULE = {
    "drain-journal": {
        "task": "risk.drain_journal",
        "schedule": 1.0,
        "options": {"queue": "ingest", "expires": 5},
    },
    "refresh-policies": {
        "task": "risk.refresh_policies",
        "schedule": 30.0,
        "options": {"queue": "ingest", "expires": 25},
    },
}
