"""Per-process dependencies: Redis client, state store, database sessions, services.

Built lazily on first use and rebuilt in each forked worker process
(``worker_process_init``), because sockets and pools must never cross a fork. Tasks
reach their dependencies only through ``runtime()``; tests build a ``Runtime`` of their
own with a fake clock and the real stores.
"""

from __future__ import annotations

import threading
from functools import cached_property

from risk_tasks.settings import Settings, get_settings
from risk_tasks.state.store import Clock, StateStore, SystemClock, connect


class Runtime:
    def __init__(self, settings: Settings | None = None, clock: Clock | None = None) -> None:
        self.settings = settings or get_settings()
        self.clock = clock or SystemClock()

    @cached_property
    def redis(self):  # noqa: ANN201 - redis.Redis
        return connect(self.settings.redis_url, self.settings.redis_socket_timeout)

    @cached_property
    def store(self) -> StateStore:
        return StateStore(self.redis, self.settings, self.clock)

    @cached_property
    def pretrade(self):  # noqa: ANN201
        from risk_tasks.pretrade import PretradeService

        return PretradeService(self.store)

    @cached_property
    def db_engine(self):  # noqa: ANN201
        from models import make_engine

        return make_engine(self.settings.database_url, self.settings.db_pool_size)

    @cached_property
    def sessions(self):  # noqa: ANN201
        from models import make_session_factory

        return make_session_factory(self.db_engine)

    @cached_property
    def drainer(self):  # noqa: ANN201
        from risk_tasks.journal import Drainer

        return Drainer(self.redis, self.sessions, self.settings.journal_batch)

    def close(self) -> None:
        if "redis" in self.__dict__:
            self.redis.close()
        if "db_engine" in self.__dict__:
            self.db_engine.dispose()


_lock = threading.Lock()
_runtime: Runtime | None = None


def runtime() -> Runtime:
    global _runtime
    if _runtime is None:
        with _lock:
            if _runtime is None:
                _runtime = Runtime()
    return _runtime


def reset_runtime(close: bool = False) -> None:
    """Forget this process's dependencies (after a fork, or between tests)."""
    global _runtime
    with _lock:
        if close and _runtime is not None:
            _runtime.close()
        _runtime = None
