"""A whole engine of a test's own: its own Redis (append-only), optionally its own
PostgreSQL, and the worker, beat and client processes that use them.

Fault tests restart or stop servers, so they cannot share the session's: a ``Stack``
starts a private ``redis-server`` (and, with ``private_postgres=True``, a private
PostgreSQL cluster), points every process it starts at them through ``RISK_*``
variables, and gives the test a ``Runtime`` and a Celery app on the same servers.
Without a private PostgreSQL it uses the session's database, emptied first.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.beat import Beat
from tests.support.services import PostgresServer, RedisServer
from tests.support.workers import Worker

PRETRADE_ENV = {"RISK_BROKER_ACK_EMULATION": "0"}  # as the pretrade role runs (roles.py)
QUIET_ENV = {"RISK_FEED_STALE_SECONDS": "0", "RISK_MONITOR_DEADLINE_SECONDS": "5"}


@dataclass
class Stack:
    private_postgres: bool = False
    env_extra: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)  # RISK_* of every process it starts
    redis: RedisServer = field(default_factory=RedisServer)
    postgres: PostgresServer | None = None
    workers: list[Worker] = field(default_factory=list)
    beats: list[Beat] = field(default_factory=list)
    app: Any = None
    rt: Any = None
    schedule_dir: Path | None = None

    # -- LIFE CYCLE --

    def start(self) -> "Stack":
        import models

        self.redis.start()
        if self.private_postgres:
            self.postgres = PostgresServer().start()
            database_url = self.postgres.url
            models.migrate(database_url)
        else:
            database_url = os.environ["RISK_DATABASE_URL"]
        self.env = {
            **QUIET_ENV,
            "RISK_BROKER_URL": self.redis.url(0),
            "RISK_RESULT_BACKEND": self.redis.url(1),
            "RISK_REDIS_URL": self.redis.url(2),
            "RISK_DATABASE_URL": database_url,
            **self.env_extra,
        }
        self.app = self._make_app()
        self.rt = self.make_runtime()
        if not self.private_postgres:
            from tests.conftest import reset_database

            reset_database(self.rt)
        self.schedule_dir = self.redis.dir / "beat"
        return self

    def _make_app(self):  # noqa: ANN202 - celery.Celery
        from celery import Celery

        app = Celery("risk-stack", set_as_current=False)
        app.config_from_object("celeryconfig")
        app.conf.update(broker_url=self.env["RISK_BROKER_URL"],
                        result_backend=self.env["RISK_RESULT_BACKEND"])
        return app

    def make_runtime(self):  # noqa: ANN201 - risk_tasks.runtime.Runtime
        from risk_tasks.runtime import Runtime
        from risk_tasks.settings import Settings

        return Runtime(settings=Settings.from_env({**os.environ, **self.env}))

    def close(self) -> None:
        for beat in self.beats:
            beat.stop()
        for worker in self.workers:
            worker.stop(timeout=10)
        if self.app is not None:
            self.app.close()
        if self.rt is not None:
            self.rt.close()
        self.redis.cleanup()
        if self.postgres is not None:
            self.postgres.cleanup()

    # -- PROCESSES --

    def worker(self, queues: str, pool: str = "solo", concurrency: int = 1,
               env: dict[str, str] | None = None, **kwargs: Any) -> Worker:
        worker = Worker(queues=queues, pool=pool, concurrency=concurrency,
                        env={**self.env, **(env or {})}, **kwargs)
        self.workers.append(worker)
        return worker.start(self.app, timeout=60)

    def pretrade_worker(self, **kwargs: Any) -> Worker:
        return self.worker("pretrade,control", env=PRETRADE_ENV, **kwargs)

    def ops_worker(self, **kwargs: Any) -> Worker:
        return self.worker("ingest,liquidation,unwind,alerts,reports,dead_letter",
                           pool="prefork", concurrency=1, **kwargs)

    def monitor_worker(self, concurrency: int = 2, **kwargs: Any) -> Worker:
        return self.worker("monitor,shards", pool="prefork", concurrency=concurrency,
                           **kwargs)

    def beat(self) -> Beat:
        beat = Beat(self.schedule_dir, env=self.env).start()
        self.beats.append(beat)
        return beat

    # -- FAULTS --

    def restart_redis(self, down_seconds: float = 0.0) -> None:
        """A clean restart: redis-server writes its append-only file on SIGTERM."""
        self.redis.restart(down_seconds)

    def stop_postgres(self) -> None:
        assert self.postgres is not None, "stop_postgres needs private_postgres=True"
        self.postgres.stop()

    def start_postgres(self) -> None:
        assert self.postgres is not None
        self.postgres.start_server()

    # -- PROBES --

    def ping(self, worker: Worker, timeout: float = 1.0) -> bool:
        try:
            return bool(self.app.control.ping(destination=[worker.hostname], timeout=timeout))
        except Exception:  # noqa: BLE001 - the broker itself may be down
            return False

    def backlog(self) -> dict[str, int]:
        return self.rt.drainer.backlog()

    def drain(self, timeout: float = 120.0) -> None:
        """Write every waiting journal record to the database (what ``riskctl drain`` does)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.rt.drainer.drain(budget_seconds=10.0)
                if not any(self.backlog().values()):
                    return
            except Exception:  # noqa: BLE001 - the database may still be coming back
                if time.monotonic() > deadline:
                    raise
            if time.monotonic() > deadline:
                raise AssertionError(f"journal not drained within {timeout} s: {self.backlog()}")
            time.sleep(0.2)

    def order_check_ids(self) -> list[str]:
        from sqlalchemy import select

        from models.tables import OrderCheckRow

        with self.rt.sessions() as session:
            return list(session.scalars(select(OrderCheckRow.order_id)))

    def count_rows(self, model: Any) -> int:
        from sqlalchemy import func, select

        with self.rt.sessions() as session:
            return int(session.scalar(select(func.count()).select_from(model)))
