"""Dead letters: tasks that failed for good, kept with everything needed to run them again.

A task is dead-lettered (by ``RiskTask``, see ``risk_tasks/tasks/base.py``) when its
retries run out, when it fails permanently, or at once for bad input. Dead-lettering
goes through Redis only, so it works while PostgreSQL is down:

1. a ``dead_letter`` journal record (task name, arguments, error, traceback, attempts,
   idempotency key) that the drainer writes to the ``dead_letters`` table;
2. the same entry as a message on the ``dead_letter`` queue (``risk.dead_letter``),
   for whoever watches that queue; the task logs it, and journals it if step 1 could
   not be written;
3. a critical alert (``kind="dead_letter"``), except for ``risk.send_alert`` itself,
   which must not feed its own failures back into itself;
4. ``risk_dead_letters_total{task}``.

Operators list, show, replay and purge them with ``riskctl dlq`` (the functions below).
**Replay** sends the original task again with its original arguments (the business id
in them, such as the ``episode_id``, is the idempotency key, so a replay finishes what
was left and repeats nothing) and marks the row ``replayed``; **purge** marks rows
``purged`` (they stay, for the audit trail). Both write PostgreSQL directly, under a row
lock, so two operators cannot replay one row twice. A dead letter of a journal record
that the database refused (``task_name`` ``journal:<stream>``) is replayed by appending
its record to that stream again.
"""

from __future__ import annotations

import logging
import traceback as tb_module
import uuid
from datetime import datetime, timezone
from typing import Any

import orjson
import redis
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from models.tables import DeadLetterRow
from risk_tasks import alerting
from risk_tasks.logs import log_event
from risk_tasks.metrics import DEAD_LETTERS

log = logging.getLogger(__name__)

STATUSES = ("dead", "replayed", "purged")
MAX_ERROR = 4000
MAX_TRACEBACK = 20_000


class DeadLetterError(Exception):
    """An operator request on dead letters that cannot be done (unknown id, wrong state)."""


# -- DEAD-LETTERING --

def make_entry(*, task_name: str, task_id: str | None, args: Any, kwargs: Any,
               idempotency_key: str | None, exc: BaseException, attempts: int,
               failure: str, at: float, traceback: str | None = None) -> dict[str, Any]:
    """The dead letter of one task, as it is journaled and queued (JSON only)."""
    if traceback is None:
        traceback = "".join(tb_module.format_exception(type(exc), exc, exc.__traceback__))
    return _clean({
        "dead_letter_id": f"dl-{task_id}" if task_id else f"dl-{uuid.uuid4()}",
        "task_name": task_name, "task_id": task_id,
        "args": _json_safe(list(args) if isinstance(args, (list, tuple)) else [args]),
        "kwargs": _json_safe(dict(kwargs or {})), "idempotency_key": idempotency_key,
        "error": f"{exc.__class__.__name__}: {exc}"[:MAX_ERROR],
        "traceback": traceback[-MAX_TRACEBACK:] if traceback else None,
        "attempts": attempts, "failure": failure, "at": at,
    })


def _clean(value: Any) -> Any:
    """Strings that JSON can carry but UTF-8 cannot (a lone surrogate in an argument or
    an error message) are kept escaped, so the dead letter itself can always be stored."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, dict):
        return {_clean(k): _clean(v) for k, v in value.items()}
    return value


def dead_letter(rt, app, entry: dict[str, Any], account_id: str | None = None) -> dict:  # noqa: ANN001
    """Keep a failed task (journal, queue, alert, metric); returns the entry."""
    journaled = True
    try:
        rt.store.journal({"t": "dead_letter", **entry})
    except redis.RedisError as exc:
        journaled = False  # risk.dead_letter journals it when it runs
        log_event(log, "dead letter not journaled yet", logging.ERROR,
                  dead_letter_id=entry["dead_letter_id"], error=str(exc))
    app.send_task("risk.dead_letter", args=[{**entry, "journaled": journaled}])
    DEAD_LETTERS.labels(entry["task_name"]).inc()
    log_event(log, "task dead-lettered", logging.ERROR, dead_letter_id=entry["dead_letter_id"],
              task_name=entry["task_name"], failed_task_id=entry["task_id"],
              idempotency_key=entry["idempotency_key"], attempts=entry["attempts"],
              failure=entry["failure"], error=entry["error"], account_id=account_id)
    if entry["task_name"] != "risk.send_alert":
        alert = alerting.make_alert(
            "critical", "dead_letter",
            f"{entry['task_name']} dead-lettered after {entry['attempts']} attempt(s): "
            f"{entry['error'][:300]}",
            account_id=account_id, policy=entry["task_name"], at=entry["at"],
            details={"dead_letter_id": entry["dead_letter_id"],
                     "idempotency_key": entry["idempotency_key"],
                     "failure": entry["failure"]})
        app.send_task("risk.send_alert", args=[alert], argsrepr=alerting.alert_repr(alert))
    return entry


def _json_safe(value: Any) -> Any:
    """Arguments came in as JSON; anything else (a direct call) is kept as its repr."""
    try:
        return orjson.loads(orjson.dumps(_clean(value)))
    except TypeError:
        return repr(value)


# -- OPERATOR FUNCTIONS (riskctl dlq) --

def row_dict(row: DeadLetterRow, full: bool = False) -> dict[str, Any]:
    data = {"id": row.id, "dead_letter_id": row.dead_letter_id, "task_name": row.task_name,
            "idempotency_key": row.idempotency_key, "attempts": row.attempts,
            "status": row.status, "error": row.error.splitlines()[0][:200] if row.error else "",
            "created_at": row.created_at.isoformat() if row.created_at else None}
    if full:
        data.update(task_id=row.task_id, args=row.args, kwargs=row.kwargs, error=row.error,
                    traceback=row.traceback,
                    replayed_at=row.replayed_at.isoformat() if row.replayed_at else None,
                    replayed_by=row.replayed_by, replay_task_id=row.replay_task_id)
    return data


def list_dead_letters(sessions: sessionmaker[Session], status: str | None = "dead",
                      task_name: str | None = None, limit: int = 100) -> list[dict]:
    """Newest first; ``status`` None lists every state."""
    query = select(DeadLetterRow).order_by(DeadLetterRow.id.desc()).limit(limit)
    if status:
        query = query.where(DeadLetterRow.status == status)
    if task_name:
        query = query.where(DeadLetterRow.task_name == task_name)
    with sessions() as session:
        return [row_dict(r) for r in session.scalars(query)]


def _find(session: Session, ident: str, lock: bool = False) -> DeadLetterRow:
    query = select(DeadLetterRow)
    if ident.isdigit():
        query = query.where(DeadLetterRow.id == int(ident))
    else:
        query = query.where(DeadLetterRow.dead_letter_id == ident)
    if lock:
        query = query.with_for_update()
    row = session.scalar(query)
    if row is None:
        raise DeadLetterError(f"no dead letter {ident}")
    return row


def show(sessions: sessionmaker[Session], ident: str) -> dict:
    with sessions() as session:
        return row_dict(_find(session, ident), full=True)


def replay(sessions: sessionmaker[Session], app, client: redis.Redis, ident: str,  # noqa: ANN001
           by: str, force: bool = False) -> dict:
    """Send a dead-lettered task again, as it was; mark the row replayed."""
    with sessions() as session, session.begin():
        row = _find(session, ident, lock=True)
        if row.status != "dead" and not force:
            raise DeadLetterError(f"dead letter {row.dead_letter_id} is {row.status} "
                                  "(--force to replay it anyway)")
        if row.task_name.startswith("journal:"):
            stream = row.task_name.split(":", 1)[1]
            payload = (row.args or [None])[0]
            if not isinstance(payload, dict):
                raise DeadLetterError(f"dead letter {row.dead_letter_id} has no record to replay")
            # The raw stream fields when the record was not JSON, else the record itself.
            record = payload["d"] if set(payload) == {"d"} else orjson.dumps(payload)
            task_id = client.xadd(stream, {"d": record}).decode()
        else:
            result = app.send_task(row.task_name, args=list(row.args or []),
                                   kwargs=dict(row.kwargs or {}),
                                   headers={"risk_replay_of": row.dead_letter_id,
                                            "risk_idempotency_key": row.idempotency_key})
            task_id = result.id
        row.status = "replayed"
        row.replayed_at = datetime.now(timezone.utc)
        row.replayed_by = by[:128]
        row.replay_task_id = task_id[:64]
        data = row_dict(row, full=True)
    log_event(log, "dead letter replayed", logging.WARNING, dead_letter_id=data["dead_letter_id"],
              task_name=data["task_name"], replay_task_id=task_id, by=by)
    return data


def purge(sessions: sessionmaker[Session], idents: list[str], by: str,
          all_dead: bool = False) -> int:
    """Mark dead letters purged (by id, or every ``dead`` one); how many changed."""
    with sessions() as session, session.begin():
        if all_dead:
            rows = list(session.scalars(select(DeadLetterRow)
                                        .where(DeadLetterRow.status == "dead")
                                        .with_for_update()))
        else:
            rows = [_find(session, ident, lock=True) for ident in idents]
        changed = 0
        for row in rows:
            if row.status == "purged":
                continue
            row.status = "purged"
            changed += 1
    log_event(log, "dead letters purged", logging.WARNING, count=changed, by=by)
    return changed
