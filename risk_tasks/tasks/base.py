"""The one decorator every task goes through: explicit name, time limits, defaults.

Routing is not set here: queues and routes live in ``celeryconfig.py``.
"""

from __future__ import annotations

from typing import Any, Callable

from celery import Task

from risk_tasks.app import app


class RiskTask(Task):
    """Base of every task of the engine."""

    typing = True


def risk_task(name: str, **options: Any) -> Callable[[Callable], Task]:
    """Register a task under its pinned ``name`` with the engine's defaults.

    Defaults: results ignored (callers that read one opt in with ``ignore_result=False``),
    a 60 s soft / 90 s hard time limit.
    """
    defaults: dict[str, Any] = {
        "base": RiskTask,
        "ignore_result": True,
        "soft_time_limit": 60,
        "time_limit": 90,
    }
    defaults.update(options)
    return app.task(name=name, **defaults)
