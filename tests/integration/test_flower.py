"""Flower for operators, for real: the command line ``riskctl run`` starts, behind basic
auth from the environment, against a real worker on a private broker.

Also the README's operator recipe: an emergency stop and a resume sent through Flower's
task API. And a screenshot of the workers page in headless Chromium (saved under
``RISK_DOCS_DIR`` too when that is set: ``RISK_DOCS_DIR=docs scripts/test
tests/integration/test_flower.py`` refreshes the README's picture).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import requests

from risk_tasks.control import emergency_status
from tests.integration.helpers import wait_until
from tests.support.flower import Flower, chromium, png_size, screenshot

pytestmark = pytest.mark.integration


@pytest.fixture()
def flower(world, private_broker):  # noqa: ANN001, ANN201
    world.symbol("BTC")
    world.prices({"BTC": 100})
    world.account("A", 1_000_000)
    # Pre-trade tasks send task events only when asked (RISK_PRETRADE_TASK_EVENTS); these
    # tests watch checks in Flower, so this worker is asked.
    worker = private_broker.start_worker(queues="pretrade,control", name="flower-pretrade",
                                         env={"RISK_PRETRADE_TASK_EVENTS": "1"})
    server = Flower(env=private_broker.env).start()
    # Flower learns of workers from their events and from its broadcast inspects.
    wait_until(lambda: worker.hostname in server.get("/api/workers?refresh=1").json(),
               timeout=60, interval=1, message="flower lists the worker")
    yield server, worker
    server.stop()


def test_authenticated_api_lists_the_worker_and_a_completed_check(world, private_broker,
                                                                  flower):
    server, worker = flower
    # when: a check is decided while Flower watches
    order = world.order(account_id="A", quantity=0.5)
    sent = private_broker.app.send_task("risk.check_order", [order])
    assert sent.get(timeout=20)["approved"] is True

    # then: the worker, with its queues, and the task with its outcome
    workers = server.get("/api/workers").json()
    queues = {q["name"] for q in workers[worker.hostname]["active_queues"]}
    assert queues == {"pretrade", "control"}

    def finished() -> dict | None:
        task = server.get("/api/tasks", params={"limit": 100}).json().get(sent.id)
        return task if task and task.get("state") == "SUCCESS" else None

    task = wait_until(finished, timeout=30, interval=0.5, message="flower sees the task done")
    assert task["name"] == "risk.check_order"
    assert task["worker"] == worker.hostname
    assert server.get(f"/api/task/info/{sent.id}").json()["state"] == "SUCCESS"


@pytest.mark.parametrize("auth", [None, ("operator", "wrong"), ("intruder", "flower-test-secret")])
def test_api_and_pages_refuse_requests_without_the_credentials(flower, auth):
    server, _ = flower
    for path in ("/api/workers", "/api/tasks", "/workers", "/"):
        response = requests.get(f"{server.url}{path}", auth=auth, timeout=30)
        assert response.status_code == 401, path
    refused = requests.post(f"{server.url}/api/task/send-task/risk.trigger_emergency_stop",
                            json={"args": ["x", "intruder"]}, auth=auth, timeout=30)
    assert refused.status_code == 401


def test_operator_stops_and_resumes_trading_through_the_flower_task_api(world, private_broker,
                                                                       flower):
    server, _ = flower
    # when: the README's stop
    sent = server.post("/api/task/send-task/risk.trigger_emergency_stop",
                       json={"args": ["exchange outage", "alice"]})
    assert sent.status_code == 200, sent.text
    stop_id = sent.json()["task-id"]
    # then: trading is halted everywhere, and the task's result is in Flower
    wait_until(lambda: emergency_status(world.rt.store)["state"] == "HALTED", timeout=20,
               message="the platform halted")

    def result_of(task_id: str) -> dict | None:
        info = server.get(f"/api/task/result/{task_id}").json()
        return info.get("result") if info.get("state") == "SUCCESS" else None

    stopped = wait_until(lambda: result_of(stop_id), timeout=20, message="stop result")
    assert stopped["success"] is True and stopped["status"]["by"] == "alice"
    check = private_broker.app.send_task("risk.check_order", [world.order(account_id="A")])
    assert check.get(timeout=20)["rejection_reason"] == "emergency_stop_active"

    # when: someone off the allow-list tries to resume, then an operator on it does
    refused = server.post("/api/task/send-task/risk.re_enable_trading",
                          json={"args": ["mallory", "let me trade"]}).json()["task-id"]
    assert wait_until(lambda: result_of(refused), timeout=20)["success"] is False
    assert emergency_status(world.rt.store)["state"] == "HALTED"
    resumed = server.post("/api/task/send-task/risk.re_enable_trading",
                          json={"args": ["alice", "exchange back"]}).json()["task-id"]
    assert wait_until(lambda: result_of(resumed), timeout=20)["success"] is True
    # then
    assert emergency_status(world.rt.store)["state"] == "ACTIVE"


@pytest.mark.skipif(chromium() is None, reason="Debian's chromium is not installed")
def test_workers_page_renders_in_headless_chromium(world, private_broker, flower, tmp_path):
    server, worker = flower
    # given: some decided checks, and the page itself answers with the worker on it
    checks = [private_broker.app.send_task("risk.check_order", [world.order(account_id="A")])
              for _ in range(12)]
    assert all(c.get(timeout=20)["approved"] for c in checks)
    wait_until(lambda: len(server.get("/api/tasks").json()) >= 12, timeout=30,
               message="flower has seen the checks")
    page = server.get("/workers")
    assert page.status_code == 200 and worker.hostname in page.text
    # when
    url = f"http://{server.user}:{server.password}@127.0.0.1:{server.port}/workers"
    shot = screenshot(url, tmp_path / "flower-workers.png")
    # then: a full-window picture, more than a blank page's few kilobytes
    assert png_size(shot) == (1400, 900)
    assert shot.stat().st_size > 20_000
    if os.environ.get("RISK_DOCS_DIR"):
        shutil.copy(shot, Path(os.environ["RISK_DOCS_DIR"]) / "flower-workers.png")
