"""A lean execution strategy for the pre-trade tasks (Celery's ``Task.Strategy``).

Celery hands every message of a task to its *strategy*, which builds a ``Request``,
fires ``task_received``, passes the request to the pool, and the pool runs it through
the tracer (signals, state bookkeeping, result store, logging). On the pretrade worker
(solo pool, at-most-once, no time limits) most of that is per-message overhead for a
task that takes a fraction of a millisecond. This strategy runs a plain pre-trade call
in the consumer itself: decode, run, store the result in the result backend (or let the
task store it in its own last round trip, ``run_replying``), acknowledge,
and send the same task events (``task-received``, ``task-succeeded`` / ``task-failed``)
when the task sends events (the pre-trade tasks do only with
``RISK_PRETRADE_TASK_EVENTS``), so Flower and the result backend see what they always see.

Anything that is not a plain call goes to Celery's default strategy unchanged: a message
in an older protocol, one with an ETA or countdown, a revoked or expired task, a retry,
or a worker whose pool is not ``solo`` (prefork must run tasks in its children).

The caller cannot tell the two apart: same message, same result record, same events.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import orjson
from celery import states
from celery.utils.saferepr import saferepr
from celery.worker import state as worker_state
from celery.worker import strategy as celery_strategy

log = logging.getLogger(__name__)


@dataclass(slots=True)
class PlainCall:
    """What the result backend reads of a request (``RiskRedisBackend`` keys on ``task``)."""

    id: str
    task: str
    hostname: str
    args: list
    kwargs: dict
    delivery_info: dict | None


def on_solo_pool(consumer) -> bool:  # noqa: ANN001
    """Whether the worker runs tasks in its consumer (solo pool): only there can a
    strategy run them itself."""
    return type(getattr(consumer, "pool", None)).__module__ == "celery.concurrency.solo"


def event_sender(task, consumer):  # noqa: ANN001, ANN201
    """The consumer's ``send`` of task events, or None when ``task`` sends none."""
    eventer = consumer.event_dispatcher
    if eventer is not None and eventer.enabled and task.send_events:
        return eventer.send
    return None


def plain_call(message, body, name: str, revoked, retries: bool = False):  # noqa: ANN001, ANN201
    """``(task id, args, kwargs)`` of a message that is a plain call of task ``name``,
    or None when it must go through Celery's default strategy: an older protocol, an
    ETA or countdown, a retry (unless ``retries``), another task, a revoked or expired
    task, or a body that does not decode (Celery reports it)."""
    headers = message.headers
    if (body is not None or not headers or "args" in message.payload
            or headers.get("eta") or headers.get("task") != name
            or (not retries and headers.get("retries"))):
        return None
    task_id = headers["id"]
    expires = headers.get("expires")
    if task_id in revoked or (expires and _expired(expires)):
        return None
    try:
        args, kwargs, _embed = message.decode()
    except Exception:  # noqa: BLE001
        return None
    return task_id, args, kwargs


def pretrade(task, app, consumer, **options: Any):  # noqa: ANN001, ANN201
    """``Task.Strategy`` of the pre-trade tasks: see the module docstring."""
    from risk_tasks.settings import get_settings

    fallback = celery_strategy.default(task, app, consumer, **options)
    if not on_solo_pool(consumer) or not get_settings().pretrade_fast_strategy:
        return fallback
    send_event = event_sender(task, consumer)
    revoked = consumer.controller.state.revoked
    hostname = consumer.hostname
    connection_errors = consumer.connection_errors
    backend = task.backend
    # RiskRedisBackend's cheaper write of the same document, when that is the backend
    store_success = getattr(backend, "store_plain_success", None)
    # A task that can store its own success in its last round trip (risk.check_order):
    # ``run_replying(*args, success=target, **kwargs)`` returns (result, stored).
    success_target = getattr(backend, "success_target", None)
    run_replying = getattr(task, "run_replying", None) if success_target else None
    run = task.run
    name = task.name
    repr_size = task.resultrepr_maxsize

    def handler(message, body, ack, reject, callbacks, **kwargs):  # noqa: ANN001, ANN202
        call = plain_call(message, body, name, revoked)
        if call is None:
            return fallback(message, body, ack, reject, callbacks, **kwargs)
        task_id, args, call_kwargs = call
        headers = message.headers
        expires = headers.get("expires")
        if send_event is not None:
            send_event("task-received", uuid=task_id, name=name,
                       args=headers.get("argsrepr", ""), kwargs=headers.get("kwargsrepr", ""),
                       root_id=headers.get("root_id"), parent_id=headers.get("parent_id"),
                       retries=0, eta=None, expires=expires)
        call = PlainCall(task_id, name, hostname, args, call_kwargs, message.delivery_info)
        # What ``celery inspect stats`` counts as processed, as for any other task.
        worker_state.total_count[name] += 1
        worker_state.all_total_count[0] += 1
        started = time.monotonic()
        stored = False
        try:
            if run_replying is not None:
                result, stored = run_replying(*args, success=success_target(task_id),
                                              **call_kwargs)
            else:
                result = run(*args, **call_kwargs)
        except Exception as exc:  # noqa: BLE001 - reported to the caller as Celery would
            log.exception("task %s[%s] raised", name, task_id)
            _finish(lambda: backend.mark_as_failure(task_id, exc, request=call), task_id)
            ack(log, connection_errors)
            if send_event is not None:
                _finish(lambda: send_event("task-failed", uuid=task_id,
                                           exception=saferepr(exc), traceback=None,
                                           hostname=hostname), task_id)
            return None
        if not stored:
            if store_success is not None:
                _finish(lambda: store_success(task_id, result), task_id)
            else:
                _finish(lambda: backend.store_result(task_id, result, states.SUCCESS,
                                                     request=call), task_id)
        ack(log, connection_errors)
        if send_event is not None:
            _finish(lambda: send_event("task-succeeded", uuid=task_id,
                                       result=result_repr(result, repr_size),
                                       runtime=time.monotonic() - started), task_id)
        return None

    return handler


def result_repr(result: Any, size: int) -> str:
    """The start of a result as Flower shows it: its JSON, cut at ``size`` characters.
    Celery's ``saferepr`` walks the whole nested decision even to show 96 characters of
    it, and cost more CPU than the check itself."""
    try:
        text = orjson.dumps(result).decode()
    except TypeError:
        return saferepr(result, size)
    return text if len(text) <= size else text[:size] + "..."


def _finish(step, task_id: str) -> None:  # noqa: ANN001
    """A result or event that cannot be written is logged, never raised: an exception
    here would stop the worker's consumer. The caller gets no answer and fails closed at
    its timeout, as when the default tracer cannot store a result."""
    try:
        step()
    except Exception:  # noqa: BLE001
        log.exception("could not record the outcome of pre-trade task %s", task_id)


def _expired(expires: str) -> bool:
    try:
        moment = datetime.fromisoformat(expires)
    except (TypeError, ValueError):
        return True  # let the default strategy judge it
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment <= datetime.now(timezone.utc)
