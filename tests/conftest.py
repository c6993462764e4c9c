"""Test session: real Redis and PostgreSQL on 127.0.0.1, real Celery worker processes.

The servers start before any test module imports the application, because settings
are read from ``RISK_*`` variables once per process. Set ``RISK_TEST_REDIS_URL``-style
variables to reuse servers you already run (see tests/support/services.py).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from tests.support.services import PostgresServer, RedisServer
from tests.support.workers import PrivateBroker, Worker

_servers: dict[str, object] = {}

TEST_ENV = {
    "RISK_OPERATORS": "alice,ops",
    "RISK_SHARDS": "4",
    "RISK_VISIBILITY_TIMEOUT_SECONDS": "15",
    "RISK_LOG_JSON": "1",
    "RISK_PRICE_STALE_SECONDS": "30",
    "RISK_RATE_LIMIT_PER_SECOND": "50",
    "RISK_METRICS_PORT": "0",
}


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("RISK_TEST_SKIP_SERVERS"):
        return
    log_dir = Path(tempfile.mkdtemp(prefix="risk-test-logs-"))
    os.environ.setdefault("RISK_TEST_LOG_DIR", str(log_dir))
    redis_base = os.environ.get("RISK_TEST_REDIS_BASE")  # e.g. redis://127.0.0.1:6379
    if redis_base is None:
        server = RedisServer().start()
        _servers["redis"] = server
        redis_base = f"redis://127.0.0.1:{server.port}"
    database_url = os.environ.get("RISK_TEST_DATABASE_URL")
    if database_url is None:
        pg = PostgresServer().start()
        _servers["postgres"] = pg
        database_url = pg.url
    os.environ.update(TEST_ENV)
    os.environ["RISK_BROKER_URL"] = f"{redis_base}/0"
    os.environ["RISK_RESULT_BACKEND"] = f"{redis_base}/1"
    os.environ["RISK_REDIS_URL"] = f"{redis_base}/2"
    os.environ["RISK_DATABASE_URL"] = database_url
    import models

    models.migrate(database_url)


def pytest_unconfigure(config: pytest.Config) -> None:
    for server in _servers.values():
        server.cleanup()  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def redis_server() -> RedisServer | None:
    return _servers.get("redis")  # type: ignore[return-value]


@pytest.fixture(scope="session")
def postgres_server() -> PostgresServer | None:
    return _servers.get("postgres")  # type: ignore[return-value]


@pytest.fixture(scope="session")
def app():  # noqa: ANN201
    from risk_tasks.app import app as celery_app

    return celery_app


@pytest.fixture()
def rt():  # noqa: ANN201
    """A fresh runtime on an empty state store and an empty system of record."""
    from risk_tasks.runtime import Runtime, reset_runtime

    reset_runtime(close=True)
    runtime = Runtime()
    runtime.redis.flushdb()
    reset_database(runtime)
    yield runtime
    runtime.close()


def reset_database(runtime) -> None:  # noqa: ANN001
    from sqlalchemy import text

    from models.tables import Base

    names = [t.name for t in Base.metadata.sorted_tables if t.name != "risk_policies"]
    with runtime.db_engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {', '.join(names)} RESTART IDENTITY"))
        conn.execute(text("DELETE FROM risk_policies WHERE name NOT IN ("
                          "'Max Account Leverage', 'Min Margin Ratio', 'Daily Drawdown Warning',"
                          " 'Max Drawdown Hard Limit', 'Emergency Drawdown Stop')"))


@pytest.fixture(scope="session")
def session_worker(app):  # noqa: ANN001, ANN201
    """One solo worker on every queue for the whole session (tests that kill workers
    start their own)."""
    worker = Worker(name="session").start(app)
    yield worker
    worker.stop()


@pytest.fixture()
def worker_factory(app):  # noqa: ANN001, ANN201
    started: list[Worker] = []

    def start(**kwargs) -> Worker:  # noqa: ANN003
        worker = Worker(**kwargs).start(app)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture()
def private_broker(app):  # noqa: ANN001, ANN201
    """A broker of this test's own (Redis DBs 3 and 4 beside the session's 0, 1 and 2):
    only the workers started with ``private_broker.start_worker`` consume it, and
    ``private_broker.app`` sends to them. See PrivateBroker."""
    base = os.environ["RISK_BROKER_URL"].rsplit("/", 1)[0]
    broker = PrivateBroker(broker_url=f"{base}/3", backend_url=f"{base}/4")
    yield broker
    broker.close()
