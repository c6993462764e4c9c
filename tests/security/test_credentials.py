"""A Redis that requires a password: every process gets the password from its
environment (``RISK_*`` URLs) and nowhere else; without it, nothing connects; it never
appears on a command line (where ``ps`` would show it to every user of the machine)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest
import redis

from tests.support.services import RedisServer
from tests.support.workers import Worker

pytestmark = pytest.mark.integration


def test_redis_password_comes_from_the_environment_only(rt):
    from celery import Celery

    from risk_tasks.runtime import Runtime
    from risk_tasks.settings import Settings

    password = secrets.token_urlsafe(16)
    server = RedisServer(password=password).start()
    try:
        env = {"RISK_BROKER_URL": server.url(0), "RISK_RESULT_BACKEND": server.url(1),
               "RISK_REDIS_URL": server.url(2)}
        # given: the URLs with the password, in the environment of a worker
        app = Celery("risk-auth", set_as_current=False)
        app.config_from_object("celeryconfig")
        app.conf.update(broker_url=env["RISK_BROKER_URL"], result_backend=env["RISK_RESULT_BACKEND"])
        worker = Worker(queues="control", env=env).start(app)
        try:
            # then: it works, and the password is not on its command line
            status = app.send_task("risk.emergency_status").get(timeout=20)
            assert status["success"] is True
            cmdline = Path(f"/proc/{worker.process.pid}/cmdline").read_bytes()
            assert password.encode() not in cmdline
        finally:
            worker.stop()
            app.close()
        # and a process whose environment lacks the password cannot connect
        without = Settings.from_env({**os.environ, **env,
                                     "RISK_REDIS_URL": f"redis://127.0.0.1:{server.port}/2"})
        with pytest.raises(redis.AuthenticationError):
            Runtime(settings=without).redis.ping()
        with_it = Runtime(settings=Settings.from_env({**os.environ, **env}))
        assert with_it.redis.ping()
        with_it.close()
    finally:
        server.cleanup()
