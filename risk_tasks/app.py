"""The Celery application: ``risk_tasks.app:app``.

Task modules are listed in ``include`` and imported by the worker, so this module never
imports them (no import cycle between the app and its tasks).
"""

from celery import Celery

from risk_tasks import kombu_patches

kombu_patches.apply()

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
    "risk_tasks.tasks.reports",
]



class RiskCelery(Celery):
    """``send_task`` that knows when nobody will read the result.

    Celery subscribes the sender to a task's result channel on every ``send_task``
    unless told ``ignore_result=True``, even when the task never stores a result. The
    monitor and the action tasks send alerts, liquidations and unwinds by name in bulk;
    for a task registered in this process, its own ``ignore_result`` is the default.
    """

    def send_task(self, name, args=None, kwargs=None, **options):  # noqa: ANN001, ANN201
        if "ignore_result" not in options and self.finalized:
            task = self.tasks.get(name)
            if task is not None and task.ignore_result:
                options["ignore_result"] = True
        return super().send_task(name, args, kwargs, **options)


app = RiskCelery("risk", include=TASK_MODULES)
app.config_from_object("celeryconfig")

import risk_tasks.signals  # noqa: E402,F401  (connects process and logging signals)
