"""``send_many`` publishes, message for message, what ``send_task`` publishes.

``send_many`` works out a task's options and route once per batch and builds each
message with Celery's own ``create_task_message``; a worker must not be able to tell its
messages from ``send_task``'s. Both are captured where kombu hands a message to the
transport (``Producer._publish``), on the real broker connection.
"""

from __future__ import annotations

from typing import Any

import pytest
from kombu.messaging import Producer

pytestmark = pytest.mark.integration

PER_MESSAGE = {"id", "root_id"}  # a new task id each; a root task is its own root


@pytest.fixture()
def published(monkeypatch):  # noqa: ANN001, ANN201
    """Messages given to the transport, recorded instead of sent."""
    seen: list[dict[str, Any]] = []

    def record(self, body, priority, content_type, content_encoding, headers,  # noqa: ANN001
               properties, routing_key, mandatory, immediate, exchange, declare,
               *_rest, **_options):
        seen.append({"body": body, "content_type": content_type,
                     "content_encoding": content_encoding, "headers": dict(headers),
                     "properties": dict(properties), "routing_key": routing_key,
                     "exchange": exchange, "priority": priority, "declare": declare})

    monkeypatch.setattr(Producer, "_publish", record)
    return seen


def comparable(message: dict[str, Any]) -> dict[str, Any]:
    headers = {k: v for k, v in message["headers"].items() if k not in PER_MESSAGE}
    # send_task also copies argsrepr into the AMQP properties (it passes its leftover
    # options on to kombu); no consumer reads it there: workers and Flower read the header.
    properties = {k: v for k, v in message["properties"].items()
                  if k not in ("correlation_id", "argsrepr")}
    return {**message, "headers": headers, "properties": properties}


@pytest.mark.parametrize("name, args, argsrepr", [
    ("risk.liquidate_account", ["A1", "equity 1.00 below maintenance margin 2.00",
                                "liq:A1:1795400000"], "['A1', ...]"),
    ("risk.send_alert", [{"alert_id": "x", "level": "critical", "kind": "liquidation",
                          "account_id": "A1", "message": "m", "details": {}, "at": 1.0}],
     "[critical liquidation A1]"),
    ("risk.unwind_account", ["A1", "stop-1"], "['A1', 'stop-1']"),
])
def test_send_many_publishes_what_send_task_publishes(app, published, name, args,  # noqa: ANN001
                                                      argsrepr) -> None:
    from risk_tasks.app import send_many

    app.loader.import_default_modules()
    app.finalize()  # as in a worker: send_task applies the registered task's options
    # when the same call is sent both ways
    app.send_task(name, args=args, argsrepr=argsrepr)
    assert send_many(name, [(args, argsrepr), (args, argsrepr)]) == 2
    # then the three messages differ only in their task ids
    one, *many = published
    assert len(many) == 2
    for message in many:
        assert comparable(message) == comparable(one)
        assert message["headers"]["id"] == message["properties"]["correlation_id"] \
            == message["headers"]["root_id"]
    assert len({m["headers"]["id"] for m in published}) == 3
    assert one["headers"]["task"] == name and one["headers"]["argsrepr"] == argsrepr
    assert one["routing_key"] == app.amqp.router.route({}, name)["queue"].name


def test_send_many_of_nothing_publishes_nothing(published) -> None:  # noqa: ANN001
    from risk_tasks.app import send_many

    assert send_many("risk.send_alert", []) == 0
    assert published == []


def test_a_process_that_never_imported_the_tasks_still_sends_their_options() -> None:
    """A benchmark or calling service sends ``risk.liquidate_account`` without importing
    its module: the message still carries the task's time limits and says its result
    is not stored (else the worker would write results nobody reads)."""
    import subprocess
    import sys

    probe = ("import sys; from risk_tasks.app import app, TaskSender; "
             "assert 'risk.liquidate_account' not in app.tasks; "
             "s = TaskSender.of(app, 'risk.liquidate_account'); "
             "print(s.ignore_result, s.time_limit, s.soft_time_limit, s.options['queue'].name)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         timeout=60, check=True).stdout.split()
    assert out == ["True", "150", "120", "liquidation"]
