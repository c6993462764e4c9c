"""A distributed risk engine on Celery.

The Celery app is ``risk_tasks.app:app``. ``celery -A risk_tasks`` finds it through the
module ``__getattr__`` below, which imports it lazily so that ``risk_tasks.engine`` can
be imported without Celery.
"""

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "celery":
        from risk_tasks.app import app

        return app
    raise AttributeError(name)
