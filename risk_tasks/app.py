"""The Celery application: ``risk_tasks.app:app``.

Task modules are listed in ``include`` and imported by the worker, so this module never
imports them (no import cycle between the app and its tasks).
"""

from celery import Celery

TASK_MODULES = [
    "risk_tasks.tasks.pretrade",
    "risk_tasks.tasks.control",
    "risk_tasks.tasks.ingest",
    "risk_tasks.tasks.journal",
    "risk_tasks.tasks.monitor",
    "risk_tasks.tasks.liquidation",
    "risk_tasks.tasks.unwind",
    "risk_tasks.tasks.alerts",
    "risk_tasks.tasks.dead_letters",
]

app = Celery("risk", include=TASK_MODULES)
app.config_from_object("celeryconfig")

import risk_tasks.signals  # noqa: E402,F401  (connects process and logging signals)
