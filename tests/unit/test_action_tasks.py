"""The action tasks are registered under their pinned names, routed to their queues,
acknowledged late, and go through the retry / dead-letter policy."""

from __future__ import annotations

import pytest

import celeryconfig
from risk_tasks.app import app
from risk_tasks.tasks.base import ActionTask

ACTIONS = {
    "risk.liquidate_account": "liquidation",
    "risk.unwind_account": "unwind",
    "risk.unwind_shard": "unwind",
    "risk.send_alert": "alerts",
}


@pytest.fixture(scope="module")
def tasks():  # noqa: ANN201
    app.loader.import_default_modules()
    return app.tasks


@pytest.mark.parametrize("name,queue", sorted(ACTIONS.items()))
def test_action_tasks_are_routed_acked_late_and_dead_lettered(tasks, name: str, queue: str) -> None:
    task = tasks[name]
    assert celeryconfig.task_routes[name] == {"queue": queue}
    assert isinstance(task, ActionTask)
    assert task.acks_late and task.reject_on_worker_lost
    assert task.soft_time_limit and task.time_limit > task.soft_time_limit


def test_dead_letter_task_is_routed_to_its_queue_and_not_itself_dead_lettered(tasks) -> None:
    task = tasks["risk.dead_letter"]
    assert celeryconfig.task_routes["risk.dead_letter"] == {"queue": "dead_letter"}
    assert not isinstance(task, ActionTask)


def test_idempotency_keys_come_from_the_business_ids(tasks) -> None:
    assert tasks["risk.liquidate_account"].idempotency_key("A1", "why", "ep-1") == ("ep-1", "A1")
    assert tasks["risk.unwind_account"].idempotency_key("A1", "stop-9") == ("stop-9:A1", "A1")
    assert tasks["risk.send_alert"].idempotency_key({"alert_id": "x", "account_id": "A2"}) \
        == ("x", "A2")
    assert tasks["risk.send_alert"].idempotency_key("garbage") == (None, None)


def test_only_action_tasks_have_a_custom_call(tasks) -> None:
    # the pre-trade path keeps Celery's direct call of run()
    assert not isinstance(tasks["risk.check_order"], ActionTask)
