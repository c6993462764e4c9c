"""The Celery application: ``risk_tasks.app:app``.

Task modules are listed in ``include`` and imported by the worker, so this module never
imports them (no import cycle between the app and its tasks).
"""

from typing import Iterable

from celery import Celery
from kombu.utils.uuid import uuid

from risk_tasks import kombu_patches, serialization

kombu_patches.apply()
serialization.register()  # kombu's "json", encoded and decoded by orjson

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


class TaskSender:
    """Sends messages of one task exactly as ``send_task`` would, with what ``send_task``
    works out on every call (the task's options, its route) worked out once.

    Each message is built and published by Celery's own ``create_task_message`` and
    ``send_task_message``; ``tests/integration/test_send_many.py`` checks the messages
    are ``send_task``'s but for the task id. Unlike ``send_task`` it never subscribes to
    the result (callers that want one, ``RiskClient``, listen for it themselves) and
    builds no ``AsyncResult``: 0.10 to 0.18 ms of CPU per message against 0.43 ms."""

    @classmethod
    def of(cls, celery_app: Celery, name: str) -> "TaskSender":
        """The sender of task ``name`` on ``celery_app``, made once per app and name
        (routes and task options do not change while a process runs)."""
        senders = celery_app.__dict__.setdefault("_risk_task_senders", {})
        sender = senders.get(name)
        if sender is None:
            sender = senders[name] = cls(celery_app, name)
        return sender

    def __init__(self, celery_app: Celery, name: str) -> None:
        task = celery_app.tasks.get(name)
        if task is None:
            # A caller that has not imported the task modules (a benchmark, a calling
            # service) would otherwise send without the task's own options: its time
            # limits, and ``ignore_result`` (a worker then stores results nobody reads).
            celery_app.loader.import_default_modules()
            task = celery_app.tasks.get(name)
        options: dict = {}
        if task is not None:
            options = {k: v for k, v in task._get_exec_options().items() if v is not None}
        options["declare"] = []
        self.app = celery_app
        self.name = name
        self.time_limit = options.pop("time_limit", None)
        self.soft_time_limit = options.pop("soft_time_limit", None)
        self.expires = options.pop("expires", None)
        options.pop("ignore_result", None)
        self.ignore_result = bool(task.ignore_result) if task is not None else False
        self.options = celery_app.amqp.router.route(options, name, None, None, task)

    def send(self, producer, args: list, argsrepr: str, task_id: str | None = None,  # noqa: ANN001
             expires: float | None = None, retry_policy: dict | None = None,
             kwargsrepr: str = "{}") -> str:
        """Publish one call with ``producer``; returns its task id."""
        app_ = self.app
        task_id = task_id or uuid()
        root_id = parent_id = None
        parent = app_.current_worker_task
        if parent is not None:
            root_id = parent.request.root_id or parent.request.id
            parent_id = parent.request.id
        expires = self.expires if expires is None else expires
        options = self.options
        if expires is not None or retry_policy is not None:
            options = dict(options)
            if expires is not None:
                options["expiration"] = expires
            if retry_policy is not None:
                options.update(retry=True, retry_policy=retry_policy)
        message = app_.amqp.create_task_message(
            task_id, self.name, args, None, expires=expires, reply_to=app_.thread_oid,
            time_limit=self.time_limit, soft_time_limit=self.soft_time_limit,
            root_id=root_id, parent_id=parent_id, ignore_result=self.ignore_result,
            argsrepr=argsrepr, kwargsrepr=kwargsrepr)
        app_.amqp.send_task_message(producer, self.name, message, **options)
        return task_id


def send_many(name: str, calls: Iterable[tuple[list, str]], batch: int = 500) -> int:
    """Send many messages of one task, given (args, argsrepr) pairs, in pipelined Redis
    round trips (kombu's ``Producer.batch``) rather than one round trip each.

    The monitor sends thousands of liquidations and alerts in one tick; a round trip per
    message is what made a broad market move slow, most of all when every core is busy.
    ``argsrepr`` is what Flower shows; Celery's own ``saferepr`` of the arguments costs
    more than building the message. Each message is built by a ``TaskSender`` (the
    task's options and route worked out once). Messages not yet flushed when an error
    interrupts the loop are not sent (callers own recovery: an episode that left no
    progress is sent again by the monitor)."""
    calls = list(calls)
    if not calls:
        return 0
    sender = TaskSender.of(app, name)
    sent = 0
    with app.producer_or_acquire() as producer, producer.batch(max_size=batch):
        for args, argsrepr in calls:
            sender.send(producer, args, argsrepr)
            sent += 1
    return sent


app = RiskCelery("risk", include=TASK_MODULES)
app.config_from_object("celeryconfig")

import risk_tasks.signals  # noqa: E402,F401  (connects process and logging signals)
