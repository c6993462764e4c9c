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
from typing import Any, Callable

from celery import Task
from celery.exceptions import Ignore, Retry

from risk_tasks import failures
from risk_tasks.app import app
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

    def _failed(self, exc: Exception, args: tuple, kwargs: dict) -> dict:
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
    for attr in ("idempotency_key", "on_dead_letter"):
        if attr in defaults:
            defaults[attr] = staticmethod(defaults[attr])
    return app.task(name=name, **defaults)
