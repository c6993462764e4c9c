"""The Celery application: ``risk_tasks.app:app``.

Task modules are listed in ``include`` and imported by the worker, so this module never
imports them (no import cycle between the app and its tasks).
"""

from typing import Iterable

from celery import Celery
from kombu.utils.uuid import uuid

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
    """``send_task`` that knows when nobody will read the result, and declares nothing.

    Celery subscribes the sender to a task's result channel on every ``send_task``
    unless told ``ignore_result=True``, even when the task never stores a result. The
    monitor and the action tasks send alerts, liquidations and unwinds by name in bulk;
    for a task registered in this process, its own ``ignore_result`` is the default.
    """

    def send_task(self, name, args=None, kwargs=None, **options):  # noqa: ANN001, ANN201
        # Every queue is routed through the anonymous direct exchange (the message goes
        # straight onto the queue's Redis list), so there is nothing to declare; kombu's
        # declare-if-not-cached bound a copy of the queue on every publish (~0.2 ms).
        options.setdefault("declare", [])
        if "ignore_result" not in options and self.finalized:
            task = self.tasks.get(name)
            if task is not None and task.ignore_result:
                options["ignore_result"] = True
        return super().send_task(name, args, kwargs, **options)


def send_alert(alert: dict) -> None:
    """Enqueue ``risk.send_alert`` for ``alert`` (with a short argsrepr)."""
    from risk_tasks.alerting import alert_repr

    send_many("risk.send_alert", [([alert], alert_repr(alert))])


def send_many(name: str, calls: Iterable[tuple[list, str]], batch: int = 500) -> int:
    """Send many messages of one task, given (args, argsrepr) pairs, in pipelined Redis
    round trips (kombu's ``Producer.batch``) rather than one round trip each.

    The monitor sends thousands of liquidations and alerts in one tick; a round trip per
    message is what made a broad market move slow, most of all when every core is busy.
    ``argsrepr`` is what Flower shows; Celery's own ``saferepr`` of the arguments costs
    more than building the message. What ``send_task`` works out per call and is the
    same for every message of one task (the task's options, its route, the parent task)
    is worked out once; each message is then built and published by Celery's own
    ``create_task_message`` and ``send_task_message``, the same message ``send_task``
    sends (no result is awaited: these tasks ignore theirs). Messages not yet flushed
    when an error interrupts the loop are not sent (callers own recovery: an episode
    that left no progress is sent again by the monitor)."""
    calls = list(calls)
    if not calls:
        return 0
    amqp = app.amqp
    task = app.tasks.get(name)
    if task is None or not task.ignore_result:  # one by one, as send_task would
        return _send_each(name, calls, batch)
    options = {**{k: v for k, v in task._get_exec_options().items() if v is not None},
               "declare": []}
    time_limit = options.pop("time_limit", None)
    soft_time_limit = options.pop("soft_time_limit", None)
    if options.pop("expires", None) is not None:  # relative to each send: one by one
        return _send_each(name, calls, batch)
    options.pop("ignore_result", None)
    options = amqp.router.route(options, name, None, None, task)
    root_id = parent_id = None
    parent = app.current_worker_task
    if parent is not None:
        root_id = parent.request.root_id or parent.request.id
        parent_id = parent.request.id
    reply_to = app.thread_oid
    sent = 0
    with app.producer_or_acquire() as producer, producer.batch(max_size=batch):
        for args, argsrepr in calls:
            message = amqp.create_task_message(
                uuid(), name, args, None, reply_to=reply_to, time_limit=time_limit,
                soft_time_limit=soft_time_limit, root_id=root_id, parent_id=parent_id,
                ignore_result=True, argsrepr=argsrepr, kwargsrepr="{}")
            amqp.send_task_message(producer, name, message, **options)
            sent += 1
    return sent


def _send_each(name: str, calls: list[tuple[list, str]], batch: int) -> int:
    sent = 0
    with app.producer_or_acquire() as producer, producer.batch(max_size=batch):
        for args, argsrepr in calls:
            app.send_task(name, args=args, producer=producer, argsrepr=argsrepr)
            sent += 1
    return sent


app = RiskCelery("risk", include=TASK_MODULES)
app.config_from_object("celeryconfig")

import risk_tasks.signals  # noqa: E402,F401  (connects process and logging signals)
