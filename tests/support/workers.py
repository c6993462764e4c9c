"""Celery workers as real processes, started with the exact command line an operator uses."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

ALL_QUEUES = "pretrade,control,ingest,monitor,shards,liquidation,unwind,alerts,reports,dead_letter"


@dataclass
class Worker:
    queues: str = ALL_QUEUES
    pool: str = "solo"
    concurrency: int = 1
    env: dict[str, str] = field(default_factory=dict)
    name: str = field(default_factory=lambda: f"test-{uuid.uuid4().hex[:8]}")
    log_dir: Path = field(default_factory=lambda: Path(os.environ.get("RISK_TEST_LOG_DIR", "/tmp")))
    extra_args: list[str] = field(default_factory=list)
    process: subprocess.Popen | None = None

    @property
    def hostname(self) -> str:
        return f"{self.name}@localhost"

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"worker-{self.name}.log"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "celery", "-A", "risk_tasks", "worker", "-P", self.pool,
                "-c", str(self.concurrency), "-Q", self.queues, "-n", self.hostname,
                "--without-gossip", "--without-mingle", "-l", "info", *self.extra_args]

    def start(self, app, timeout: float = 30.0) -> "Worker":  # noqa: ANN001
        env = dict(os.environ, **self.env)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(self.command(), env=env, stdout=log, stderr=log,
                                        start_new_session=True)
        self.wait_ready(app, timeout)
        return self

    def wait_ready(self, app, timeout: float = 30.0) -> None:  # noqa: ANN001
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"worker {self.name} exited: see {self.log_path}")
            replies = app.control.ping(destination=[self.hostname], timeout=0.5)
            if replies:
                return
        raise RuntimeError(f"worker {self.name} not ready after {timeout}s: see {self.log_path}")

    def kill(self) -> None:
        """SIGKILL the whole process group (the worker and its pool children)."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self, timeout: float = 20.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def logs(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


@dataclass
class PrivateBroker:
    """A broker and result backend of their own, on spare databases of the test Redis.

    Workers started here, and the app that talks to them, share the hot state (and the
    database) with everything else, but no other worker, such as the session worker,
    can take their messages. Tests that must know exactly which workers consume a queue
    (none at all, two named ones, one that gets killed) use this, whatever else runs.
    """

    broker_url: str
    backend_url: str
    app: object = None  # celery.Celery, built in __post_init__
    workers: list[Worker] = field(default_factory=list)

    def __post_init__(self) -> None:
        from celery import Celery

        app = Celery("risk-private", set_as_current=False)
        app.config_from_object("celeryconfig")
        app.conf.update(broker_url=self.broker_url, result_backend=self.backend_url)
        self.app = app
        self.flush()

    @property
    def env(self) -> dict[str, str]:
        return {"RISK_BROKER_URL": self.broker_url, "RISK_RESULT_BACKEND": self.backend_url}

    def start_worker(self, **kwargs) -> Worker:  # noqa: ANN003
        """A worker on this broker (``env`` entries in kwargs are added to the broker's)."""
        kwargs["env"] = {**kwargs.get("env", {}), **self.env}
        worker = Worker(**kwargs)
        self.workers.append(worker)
        return worker.start(self.app)

    def queue_length(self, queue: str) -> int:
        import redis

        from risk_tasks.settings import client_url

        client = redis.Redis.from_url(client_url(self.broker_url))
        try:
            return int(client.llen(queue))
        finally:
            client.close()

    def flush(self) -> None:
        import redis

        from risk_tasks.settings import client_url

        for url in (self.broker_url, self.backend_url):
            client = redis.Redis.from_url(client_url(url))
            try:
                client.flushdb()
            finally:
                client.close()

    def close(self) -> None:
        for worker in self.workers:
            worker.stop()
        self.app.close()
        self.flush()
