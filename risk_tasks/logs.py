"""Structured logs: one JSON object per line, with task, account and order ids.

``log_event(logger, "event", account_id=..., order_id=...)`` adds fields; the current
Celery task's name and id are added to every record logged inside a task.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import orjson

from risk_tasks.settings import get_settings

_RESERVED = set(vars(logging.makeLogRecord({})))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 6),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
            "pid": record.process,
        }
        try:
            from celery import current_task

            task = current_task
            if task and task.request and task.request.id:
                out["task"] = task.name
                out["task_id"] = task.request.id
        except Exception:  # noqa: BLE001 - logging must never fail
            pass
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        try:
            return orjson.dumps(out, default=str).decode()
        except TypeError:  # a lone surrogate from hostile input: escape it, still one line
            import json

            return json.dumps(out, default=str)


def configure_logging(logger: logging.Logger | None = None, level: int | str | None = None) -> None:
    """JSON lines on stderr for ``logger`` (the root logger by default).

    ``level`` None keeps the level the logger has (Celery sets it from ``-l``).
    """
    target = logger or logging.getLogger()
    if get_settings().log_json:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
        target.handlers[:] = [handler]
    if level is not None:
        target.setLevel(level)


def log_event(logger: logging.Logger, event: str, level: int = logging.INFO, **fields: Any) -> None:
    """One structured line; ``exc_info``/``stack_info`` go to logging, the rest to fields."""
    exc_info = fields.pop("exc_info", None)
    stack_info = bool(fields.pop("stack_info", False))
    logger.log(level, event, extra=fields, exc_info=exc_info, stack_info=stack_info)


__all__ = ["configure_logging", "log_event", "JsonFormatter", "time"]
