"""The Celery application: ``risk_tasks.app:app``.

Task modules are listed in ``include`` and imported by the worker, so this module never
imports them (no import cycle between the app and its tasks).
"""

from base64 import b64encode
from datetime import timedelta
from typing import Any, Iterable

import orjson
import redis
from celery import Celery, signals
from celery.utils.time import maybe_make_aware
from kombu import Queue
from kombu.entity import maybe_delivery_mode
from kombu.serialization import dumps as kombu_dumps
from kombu.utils.uuid import uuid
from redis.backoff import NoBackoff
from redis.retry import Retry

from risk_tasks import kombu_patches, serialization
from risk_tasks.settings import client_url

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
        message = self.message(task_id, args, argsrepr, expires=expires, root_id=root_id,
                               parent_id=parent_id, kwargsrepr=kwargsrepr)
        app_.amqp.send_task_message(producer, self.name, message, **options)
        return task_id

    def message(self, task_id: str, args: list, argsrepr: str, expires: float | None = None,
                root_id: str | None = None, parent_id: str | None = None,
                kwargsrepr: str = "{}") -> tuple:
        """Celery's message of one call with this task's options (``create_task_message``:
        headers, properties, body and sent event)."""
        return self.app.amqp.create_task_message(
            task_id, self.name, args, None, expires=expires, reply_to=self.app.thread_oid,
            time_limit=self.time_limit, soft_time_limit=self.soft_time_limit,
            root_id=root_id, parent_id=parent_id, ignore_result=self.ignore_result,
            argsrepr=argsrepr, kwargsrepr=kwargsrepr)


class DirectSender:
    """Sends calls of one task as ``TaskSender`` does, but pushes each message onto the
    task's queue with one ``LPUSH`` instead of going through kombu's producer.

    For a calling service, kombu's publish (the producer pool, ``Producer.publish`` and
    its retry wrapper, the channel's preparation of the message) cost 0.49 to 0.50 ms of
    CPU per ``risk.check_order`` on these machines: half or more of what the caller
    spent on a check, and all of it on the caller's critical path. This builds the
    task's message once with Celery's own ``create_task_message`` (the task's options
    and time limits) and fills in per call only what differs from one message to the
    next: the task id, the arguments, the expiry, the sending thread's reply address,
    and kombu's delivery tag and expiration. It pushes the message onto the queue's list
    as kombu's Redis transport does for a direct queue (``Channel._put``), with a Redis
    client of its own on the broker (``broker_client``): 0.22 to 0.24 ms for the whole
    publish (``bench/client_publish.py``).

    It covers what ``RiskClient`` sends, and ``queue_of`` and ``usable`` say when it
    does: a task routed to a queue of a direct exchange (kombu's delivery through the
    anonymous exchange), without priority or queue expiry, sent outside a task (whose
    calls carry its root and parent ids) and with nothing connected to Celery's publish
    signals. Otherwise the caller uses ``TaskSender``.
    ``tests/integration/test_direct_send.py`` checks that the messages are
    ``TaskSender``'s but for the task id, the delivery tag and the clock."""

    def __init__(self, celery_app: Celery, name: str, queue: str) -> None:
        sender = TaskSender.of(celery_app, name)
        template = sender.message("", [], "", kwargsrepr="")
        route = sender.options["queue"]
        self.app = celery_app
        self.queue = queue
        self.headers = dict(template.headers)
        self.kwargs, self.embed = template.body[1], template.body[2]
        self.serializer = sender.options.get("serializer") or celery_app.conf.task_serializer
        self.properties = {
            **template.properties,
            "delivery_mode": maybe_delivery_mode(
                route.exchange.delivery_mode or celery_app.conf.task_default_delivery_mode),
        }

    @staticmethod
    def queue_of(celery_app: Celery, name: str) -> str | None:
        """The queue whose list takes ``name``'s messages, when a ``DirectSender`` can
        send them (see the class), else None."""
        options = TaskSender.of(celery_app, name).options
        queue = options.get("queue")
        if (not isinstance(queue, Queue) or queue.exchange is None
                or queue.exchange.type != "direct" or queue.max_priority
                or queue.expires is not None or celery_app.conf.task_send_sent_event
                or any(options.get(k) is not None
                       for k in ("exchange", "routing_key", "priority", "compression"))):
            return None
        return queue.name

    @staticmethod
    def usable(celery_app: Celery) -> bool:
        """False inside a task, or when anything listens to Celery's publish signals
        (which only ``send_task_message`` sends)."""
        return (celery_app.current_worker_task is None
                and not signals.before_task_publish.receivers
                and not signals.after_task_publish.receivers)

    def message(self, args: list, task_id: str, expires: float) -> bytes:
        """The message of one call that expires in ``expires`` seconds, as kombu
        pushes it (JSON)."""
        app_ = self.app
        expiry = maybe_make_aware(app_.now() + timedelta(seconds=expires), tz=app_.timezone)
        content_type, encoding, body = kombu_dumps((args, self.kwargs, self.embed),
                                                   serializer=self.serializer)
        if isinstance(body, str):
            body = body.encode(encoding)
        return orjson.dumps({
            "body": b64encode(body).decode(),
            "content-encoding": encoding,
            "content-type": content_type,
            "headers": {**self.headers, "id": task_id, "root_id": task_id,
                        "expires": expiry.isoformat()},
            "properties": {**self.properties, "correlation_id": task_id,
                           "reply_to": app_.thread_oid,
                           "expiration": str(int(expires * 1000)),
                           "delivery_info": {"exchange": "", "routing_key": self.queue},
                           "priority": 0, "body_encoding": "base64",
                           "delivery_tag": uuid()},
        })

    def send(self, client: Any, args: list, task_id: str, expires: float) -> None:
        """Push one call onto the queue with ``client`` (``broker_client``)."""
        client.lpush(self.queue, self.message(args, task_id, expires))

    @staticmethod
    def broker_client(celery_app: Celery, socket_timeout: float | None = None) -> Any:
        """A Redis client of the app's broker for direct sends, or None when kombu's
        transport does more than push onto a list there: a failover list of brokers,
        Sentinel, TLS options, a global key prefix. Its connections have kombu's
        timeouts (none longer than ``socket_timeout``) but none of
        redis-py's retries and back-off: a caller retries for only as long as it
        waits (``RiskClient``)."""
        conf = celery_app.conf
        url = conf.broker_write_url or conf.broker_url
        options = conf.broker_transport_options or {}
        if (not isinstance(url, str) or ";" in url or conf.broker_use_ssl
                or not url.startswith(("redis://", "redis+socket://"))
                or options.get("global_keyprefix") or options.get("master_name")):
            return None

        def bounded(timeout: float | None) -> float | None:
            given = [t for t in (timeout, socket_timeout) if t]
            return min(given) if given else None

        return redis.Redis.from_url(
            client_url(url), socket_timeout=bounded(options.get("socket_timeout")),
            socket_connect_timeout=bounded(options.get("socket_connect_timeout")),
            retry=Retry(NoBackoff(), 0))


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
