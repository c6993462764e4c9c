"""The one decorator every task goes through: explicit name, time limits, defaults.

Routing is not set here: queues and routes live in ``celeryconfig.py``.

Action tasks (liquidation, unwind, alerts) also declare their failure handling here,
by ``dead_letters=True`` and an ``idempotency_key`` (see ``risk_tasks.failures``):

- a transient error retries with jittered exponential back-off
  (``failures.backoff_seconds``), at most ``RISK_TASK_MAX_RETRIES`` times;
- a permanent error, bad input, or a transient one whose retries ran out is
  dead-lettered (``risk_tasks.dlq.dead_letter``): kept with its arguments, error,
  traceback and attempts, queued on ``dead_letter``, alerted and counted. The task then
  returns ``{"ok": false, "dead_lettered": true, ...}`` and its message is acknowledged.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable

from celery import Task
from celery.exceptions import Ignore, Retry

from risk_tasks import failures
from risk_tasks.app import app
from risk_tasks.batches import Outcome
from risk_tasks.engine.validation import InvalidInput, identifier
from risk_tasks.logs import log_event

log = logging.getLogger(__name__)

KeyOf = Callable[..., "tuple[str | None, str | None]"]  # (idempotency key, account id)


class RiskTask(Task):
    """Base of every task of the engine."""

    typing = True


class ActionTask(RiskTask):
    """An action task: transient errors retry, the rest is dead-lettered (see above).

    A separate class, so that only action tasks run through a custom ``__call__`` (Celery
    calls ``run`` directly for the others, the pre-trade tasks among them)."""

    dead_letters = True
    idempotency_key: KeyOf | None = None
    """From the task's arguments: its business id and the account it acts on."""
    on_dead_letter: Callable[[Any, list, dict, dict], None] | None = None
    """Called with (runtime, args, kwargs, entry) after a task was dead-lettered."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except (Retry, Ignore):
            raise
        except Exception as exc:  # classified below: retried or dead-lettered, never lost
            return self._failed(exc, args, kwargs)

    # -- FAILURE POLICY --

    def _failed(self, exc: Exception, args: tuple, kwargs: dict, batched: bool = False) -> dict:
        """Retry ``exc`` or dead-letter the call. ``batched``: the call came in a batch
        (``risk_tasks.batches``), which has no Celery retry to raise: the retry is sent
        as a new message (same task id, one more retry, the back-off as its countdown)
        and the call's own message is then acknowledged like any finished one."""
        from risk_tasks.runtime import runtime

        rt = runtime()
        kind = failures.classify(exc)
        retries = self.request.retries or 0
        max_retries = rt.settings.task_max_retries
        key, account_id = self._keys(args, kwargs)
        if kind == failures.TRANSIENT_KIND and retries < max_retries:
            countdown = failures.backoff_seconds(
                retries, rt.settings.retry_backoff_base_seconds,
                rt.settings.retry_backoff_max_seconds, rt.settings.visibility_timeout_seconds)
            log_event(log, "task failed; retrying", logging.WARNING, task_name=self.name,
                      task_id=self.request.id, attempt=retries + 1, countdown=round(countdown, 3),
                      idempotency_key=key, account_id=account_id,
                      error=f"{exc.__class__.__name__}: {exc}"[:500])
            if batched:
                self.apply_async(args, kwargs, task_id=self.request.id, retries=retries + 1,
                                 countdown=countdown)
                return {"ok": False, "retrying": True, "countdown": countdown}
            raise self.retry(exc=exc, countdown=countdown, max_retries=max_retries)
        failure = kind if kind != failures.TRANSIENT_KIND else "retries_exhausted"
        from risk_tasks import dlq

        entry = dlq.make_entry(task_name=self.name, task_id=self.request.id, args=args,
                               kwargs=kwargs, idempotency_key=key, exc=exc,
                               attempts=retries + 1, failure=failure, at=rt.clock.time())
        dlq.dead_letter(rt, self.app, entry, account_id=account_id)
        if self.on_dead_letter is not None:
            self.on_dead_letter(rt, list(args), dict(kwargs), entry)
        return {"ok": False, "dead_lettered": True, "dead_letter_id": entry["dead_letter_id"],
                "failure": failure, "error": entry["error"]}

    # -- BATCHES (``risk_tasks.batches``) --

    batch_run: Callable[[list, dict, Callable[[dict], None], Any], Any] | None = None
    """``(args, kwargs, alert, prepared)``: the task's body for a call that came in a
    batch, which hands its alerts to ``alert`` instead of sending them (they go out
    after the batch). Set (with ``Strategy="risk_tasks.batches:batched"``) on tasks that
    batch."""
    batch_prepare: Callable[[list], list] | None = None
    """``(calls) -> one item per call``, handed to each call's ``batch_run`` as
    ``prepared``: the calls' first reads, made for the whole batch at once (optional;
    if it fails, every call gets None and reads for itself)."""
    batch_steps: Callable[[list, dict, Callable[[dict], None], Any], Any] | None = None
    """``(args, kwargs, alert, prepared)``: ``batch_run`` as a generator that yields the
    requests it waits on (``actions.CloseRequest``) and returns the result, or None for
    a call to run by ``batch_run`` after the others (optional). The batch advances every
    call to its first request, sends those together (``actions.execute_all``), then
    finishes each call, its further requests executed one by one."""

    def run_batch(self, calls: list) -> list:
        """Run the calls of a batch, each under its own request context and failure
        policy: with ``batch_steps``, up to each one's first request, those requests
        together, then each to its end; the calls it leaves out after that, one after the
        other. Then send their alerts in one pipelined round trip. A call whose alerts
        could not be sent is reported unsettled (not acknowledged: delivered again, it
        sends them again)."""
        from risk_tasks.actions import drive, execute_all
        from risk_tasks.alerting import alert_repr
        from risk_tasks.app import send_many

        alerts: list[tuple[int, dict]] = []
        prepared: list = [None] * len(calls)
        if self.batch_prepare is not None:
            try:
                prepared = self.batch_prepare(calls)
            except Exception:  # noqa: BLE001 - each call then reads for itself
                log.exception("could not prepare a batch of %d %s calls", len(calls),
                              self.name)
        notify = [lambda alert, i=i: alerts.append((i, alert)) for i in range(len(calls))]
        outcomes: list[Any] = [None] * len(calls)
        waiting: list[tuple[int, _Waiting]] = []
        if self.batch_steps is not None:
            for i, call in enumerate(calls):
                outcome = self._in_context(call, lambda i=i, call=call: _first_request(
                    self.batch_steps(call.args, call.kwargs, notify[i], prepared[i])))
                if isinstance(outcome, _Waiting):
                    waiting.append((i, outcome))
                elif outcome is not _LATER:
                    outcomes[i] = outcome
            try:
                replies = execute_all([w.request for _, w in waiting])
            except Exception as exc:  # noqa: BLE001 - raised in each call, as its own close's
                replies = [exc] * len(waiting)
            for (i, w), reply in zip(waiting, replies):
                error = reply if isinstance(reply, BaseException) else None
                outcomes[i] = self._in_context(calls[i], lambda w=w, reply=reply, error=error:
                                               drive(w.steps, None if error else reply, error),
                                               w.spent)
        for i, call in enumerate(calls):
            if outcomes[i] is None:  # left to batch_run (_LATER), or no batch_steps
                outcomes[i] = self._in_context(call, lambda i=i, call=call: self.batch_run(
                    call.args, call.kwargs, notify[i], prepared[i]))
        if alerts:
            try:
                send_many("risk.send_alert", [([alert], alert_repr(alert)) for _, alert in alerts])
            except Exception:  # noqa: BLE001 - the calls come back and alert again
                log.exception("could not send the alerts of a batch of %s", self.name)
                for i in {i for i, _ in alerts}:
                    outcomes[i].settled = False
        return outcomes

    def _in_context(self, call: Any, body: Callable[[], Any], spent: float = 0.0) -> Any:
        """``body()`` under ``call``'s request context and failure policy: its
        ``Outcome``, or what ``body`` returned if that is a ``_Waiting`` or ``_LATER``."""
        started = time.monotonic()
        self.push_request(id=call.id, retries=call.retries, args=call.args,
                          kwargs=call.kwargs, task=self.name, argsrepr=call.argsrepr)
        try:
            try:
                result = body()
            except Exception as exc:  # classified: retried or dead-lettered, never lost
                result = self._failed(exc, tuple(call.args), call.kwargs, batched=True)
            if isinstance(result, _Waiting):
                result.spent = spent + time.monotonic() - started
                return result
            if result is _LATER:
                return result
            return Outcome(result, True, spent + time.monotonic() - started)
        except Exception:  # noqa: BLE001 - not even retried or dead-lettered: not acked
            log.exception("%s[%s]: could not be run, retried or dead-lettered",
                          self.name, call.id)
            return Outcome(None, False)
        finally:
            self.pop_request()

    def _keys(self, args: tuple, kwargs: dict) -> tuple[str | None, str | None]:
        if self.idempotency_key is None:
            return None, None
        try:
            key, account_id = self.idempotency_key(*args, **kwargs)
        except Exception:  # arguments of the wrong shape: the dead letter keeps them as they are
            return None, None
        key = key if isinstance(key, str) else None
        try:  # a malformed account id must not make the dead letter's alert bad input too
            account_id = identifier({"account_id": account_id}, "account_id")
        except InvalidInput:
            account_id = None
        return key, account_id


@dataclass(slots=True)
class _Waiting:
    """A batched call stopped at its first request (``ActionTask.batch_steps``)."""

    steps: Any  # the generator
    request: Any
    spent: float = 0.0


_LATER = object()  # a call ``batch_steps`` leaves to ``batch_run``, after the others


def _first_request(steps: Any) -> Any:
    """Advance ``steps`` to its first request (``_Waiting``); its result if it needs
    none; ``_LATER`` if there are no steps."""
    if steps is None:
        return _LATER
    try:
        return _Waiting(steps, next(steps))
    except StopIteration as stop:
        return stop.value


def risk_task(name: str, **options: Any) -> Callable[[Callable], Task]:
    """Register a task under its pinned ``name`` with the engine's defaults.

    Defaults: results ignored (callers that read one opt in with ``ignore_result=False``),
    a 60 s soft / 90 s hard time limit. ``dead_letters=True`` with an
    ``idempotency_key`` function gives the retry and dead-letter policy above.
    """
    defaults: dict[str, Any] = {
        "base": RiskTask,
        "ignore_result": True,
        "soft_time_limit": 60,
        "time_limit": 90,
    }
    if options.pop("dead_letters", False):
        defaults["base"] = ActionTask
    defaults.update(options)
    for attr in ("idempotency_key", "on_dead_letter", "batch_run", "batch_prepare",
                 "batch_steps", "run_replying"):
        if attr in defaults:
            defaults[attr] = staticmethod(defaults[attr])
    return app.task(name=name, **defaults)
