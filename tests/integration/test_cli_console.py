"""``riskctl`` as an operator runs it (a real process against the test's Redis,
PostgreSQL and workers): status, stop/resume seen by status, and exit code 3 with a
clear message when Redis, the broker or PostgreSQL cannot be reached."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.support.services import free_port

pytestmark = pytest.mark.integration


def riskctl(*args: str, env: dict[str, str] | None = None,
            timeout: float = 90) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "risk_tasks.cli", *args],
                          env=dict(os.environ, COLUMNS="200", **(env or {})),
                          capture_output=True, text=True,
                          timeout=timeout)


def closed_redis(db: int) -> str:
    return f"redis://127.0.0.1:{free_port()}/{db}"


def test_status_shows_workers_queue_depths_and_trading_state(rt, private_broker):
    # given: one worker on the control queue, and two reports waiting with no consumer
    worker = private_broker.start_worker(queues="control")
    for _ in range(2):
        private_broker.app.send_task("risk.compliance_report", ["hourly"])
    # when
    done = riskctl("status", "--json", "--timeout", "3", env=private_broker.env)
    # then
    assert done.returncode == 0, done.stderr
    status = json.loads(done.stdout)
    assert status["workers"][worker.hostname] == ["control"]
    assert status["queues"]["reports"] == 2 and status["queues"]["pretrade"] == 0
    assert status["trading"]["state"] == "ACTIVE"
    assert status["database"] == "ok"
    assert set(status["backlog"]) == {"risk:audit", "risk:journal"}


def test_a_stop_and_a_resume_show_in_status(rt, private_broker):
    stopped = riskctl("stop", "--reason", "exchange outage", "--by", "alice", "--json",
                      env=private_broker.env)
    assert stopped.returncode == 0, stopped.stderr
    shown = riskctl("status", "--timeout", "0.5", env=private_broker.env)
    assert "HALTED" in shown.stdout and "alice" in shown.stdout and "exchange outage" in shown.stdout
    assert "none answered" in shown.stdout
    refused = riskctl("resume", "--reason", "please", "--by", "mallory", env=private_broker.env)
    assert refused.returncode == 1
    resumed = riskctl("resume", "--reason", "exchange back", "--by", "alice", "--json",
                      env=private_broker.env)
    assert resumed.returncode == 0 and json.loads(resumed.stdout)["success"] is True
    assert json.loads(riskctl("status", "--json", "--timeout", "0.5",
                              env=private_broker.env).stdout)["trading"]["state"] == "ACTIVE"


@pytest.mark.parametrize("args", [["status"], ["stop", "--reason", "x", "--by", "alice"],
                                  ["accounts", "show", "A"]])
def test_redis_unreachable_is_exit_3_with_the_address(args):
    url = closed_redis(2)
    done = riskctl(*args, env={"RISK_REDIS_URL": url})
    assert done.returncode == 3, (done.stdout, done.stderr)
    assert "cannot reach Redis" in done.stderr and url.rsplit("/", 1)[0] in done.stderr
    assert "Traceback" not in done.stderr


def test_broker_unreachable_is_exit_3():
    done = riskctl("status", env={"RISK_BROKER_URL": closed_redis(0)})
    assert done.returncode == 3, (done.stdout, done.stderr)
    assert "cannot reach the broker" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("args", [["policies", "list"], ["report", "--period", "hourly"],
                                  ["dlq", "list"]])
def test_database_unreachable_is_exit_3_without_the_password(args):
    url = f"postgresql+psycopg://risk:s3cret@127.0.0.1:{free_port()}/risk"
    done = riskctl(*args, env={"RISK_DATABASE_URL": url})
    assert done.returncode == 3, (done.stdout, done.stderr)
    assert "cannot reach the database" in done.stderr
    assert "s3cret" not in done.stderr + done.stdout and "Traceback" not in done.stderr


def test_status_shows_everything_it_can_and_exits_3_when_the_database_is_away(rt):
    url = f"postgresql+psycopg://risk:s3cret@127.0.0.1:{free_port()}/risk"
    done = riskctl("status", "--json", "--timeout", "0.5", env={"RISK_DATABASE_URL": url})
    assert done.returncode == 3
    status = json.loads(done.stdout)
    assert status["database"].startswith("unreachable") and "s3cret" not in done.stdout
    assert status["trading"]["state"] == "ACTIVE" and "queues" in status
