"""Batched execution of an action task on a solo worker (Celery's ``Task.Strategy``).

A market-wide shock sends a thousand ``risk.liquidate_account`` messages at once. Run one
by one, most of a paper liquidation's worker CPU is not the liquidation: Celery's
request and tracer per message, and the publish of its alert (py-spy, 2026-12-01: the
liquidation's own steps were 35 % of the worker's time). This strategy collects the
messages a worker has already received (up to ``RISK_ACTION_BATCH_SIZE``, or what came in
``RISK_ACTION_BATCH_WAIT_MS`` after the first) and hands them to the task's
``run_batch`` in one go, in the consumer itself, as the solo pool would run each:

- every call runs exactly as it would alone (same arguments, same idempotency, same
  retry and dead-letter policy: ``ActionTask._failed`` with ``batched=True`` sends the
  retry as a new message with the same task id);
- side messages the calls produce (a liquidation's alert) are published together, in
  one pipelined round trip, after the batch;
- each call's own message is acknowledged only after that (the batch's messages in one
  round trip, ``kombu_patches.ack_all``), so a worker that dies anywhere in a batch
  leaves every message of it to be delivered again (``acks_late`` as before); a call
  that could not even be retried or dead-lettered (the broker down) is not acknowledged
  either and comes back after the visibility timeout;
- Flower sees each call: one ``task-succeeded`` event per call, which carries what
  ``task-received`` would have (name, arguments, retries), so a call costs one event,
  not two.

A worker that runs batches takes many messages per fetch (``kombu_patches``, "many
messages per fetch"): one message per ``BRPOP`` made batches of one or two.

Anything that is not a plain call goes to Celery's default strategy unchanged and runs
one by one: a message in an older protocol, one with an ETA or countdown (a retry), a
revoked or expired task, or a worker whose pool is not ``solo``. A worker buffers at most
its prefetch count, so the ``actions`` role's prefetch is the batch size
(``risk_tasks.roles``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable

from celery.worker import state as worker_state
from celery.worker import strategy as celery_strategy

from risk_tasks import kombu_patches
from risk_tasks.fastpath import event_sender, on_solo_pool, plain_call, result_repr

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Call:
    """One received message of a batch: its id, arguments and how to settle it."""

    id: str
    retries: int
    args: list
    kwargs: dict
    ack: Callable
    reject: Callable
    headers: dict
    message: Any  # kombu's, acknowledged with the rest of the batch (``ack_all``)

    @property
    def argsrepr(self) -> str:
        return self.headers.get("argsrepr", "")


@dataclass(slots=True)
class Outcome:
    """What ``run_batch`` reports for one call: its result, or ``settled=False`` when it
    must not be acknowledged (it could not be run, retried or dead-lettered)."""

    result: Any
    settled: bool = True
    runtime: float = 0.0


def batched(task, app, consumer, **options: Any):  # noqa: ANN001, ANN201
    """``Task.Strategy`` of a task with ``run_batch(calls) -> list[Outcome]``."""
    from risk_tasks.settings import get_settings

    fallback = celery_strategy.default(task, app, consumer, **options)
    settings = get_settings()
    size = settings.action_batch
    if not on_solo_pool(consumer) or size <= 1:
        return fallback
    wait = settings.action_batch_wait_ms / 1000.0
    queue = app.amqp.router.route({}, task.name, (), {}, task).get("queue")
    if queue is not None:  # so that batches fill (see there)
        kombu_patches.enable_multi_fetch(getattr(queue, "name", queue))
    send_event = event_sender(task, consumer)
    revoked = consumer.controller.state.revoked
    connection_errors = consumer.connection_errors
    timer = consumer.timer
    name = task.name
    repr_size = task.resultrepr_maxsize
    buffer: list[Call] = []
    pending: list[Any] = [None]  # the flush timer's entry, while one is set

    def flush() -> None:
        if pending[0] is not None:
            pending[0].cancel()
            pending[0] = None
        if not buffer:
            return
        calls = buffer[:]
        del buffer[:]
        log.info("running a batch of %d %s calls", len(calls), name)
        try:
            outcomes = task.run_batch(calls)
        except Exception:  # noqa: BLE001 - must not stop the consumer; nothing is acked
            log.exception("batch of %d %s calls failed; they will be delivered again",
                          len(calls), name)
            outcomes = [Outcome(None, settled=False)] * len(calls)
        settled = []
        for call, outcome in zip(calls, outcomes):
            worker_state.total_count[name] += 1
            worker_state.all_total_count[0] += 1
            if not outcome.settled:
                # Back on the queue (or, with the broker away, redelivered after the
                # visibility timeout): never acknowledged without an outcome.
                call.reject(log, connection_errors, requeue=True)
            else:
                settled.append((call, outcome))
        acknowledge(settled, connection_errors)
        for call, outcome in settled:
            if send_event is not None:
                headers = call.headers
                _quietly(lambda: send_event(
                    "task-succeeded", uuid=call.id, name=name, args=call.argsrepr,
                    kwargs=headers.get("kwargsrepr", ""), root_id=headers.get("root_id"),
                    parent_id=headers.get("parent_id"), retries=call.retries,
                    result=result_repr(outcome.result, repr_size),
                    runtime=outcome.runtime), call.id)

    def handler(message, body, ack, reject, callbacks, **kwargs):  # noqa: ANN001, ANN202
        call = plain_call(message, body, name, revoked, retries=True)
        if call is None:
            return fallback(message, body, ack, reject, callbacks, **kwargs)
        task_id, args, call_kwargs = call
        headers = message.headers
        buffer.append(Call(task_id, headers.get("retries") or 0, args, call_kwargs, ack,
                           reject, headers, message))
        if len(buffer) >= size:
            flush()
        elif pending[0] is None:
            pending[0] = timer.call_after(wait, flush)
        return None

    return handler


def acknowledge(settled: list[tuple[Call, Outcome]], connection_errors: tuple) -> None:
    """Acknowledge the settled calls of a batch: in one round trip (``ack_all``), else,
    if that fails, each as Celery would (a failure is logged; the message comes back)."""
    try:
        kombu_patches.ack_all([call.message for call, _ in settled])
    except connection_errors:
        log.exception("could not acknowledge a batch of %d; its messages will be "
                      "delivered again", len(settled))
    except Exception:  # noqa: BLE001 - anything else: fall back to Celery's own ack
        log.exception("batch acknowledgement failed; acknowledging one by one")
        for call, _ in settled:
            if not call.message.acknowledged:
                call.ack(log, connection_errors)


def _quietly(step: Callable[[], Any], task_id: str) -> None:
    try:
        step()
    except Exception:  # noqa: BLE001 - an event that cannot be sent is not a failure
        log.exception("could not send the event of task %s", task_id)
