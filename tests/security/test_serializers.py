"""Only JSON is accepted: a message with a pickle or yaml content type, published straight
to a worker's queue through kombu (as an intruder on the broker would), is refused. The
task never runs, the payload is never deserialised, the worker stays alive and says so
in its log.
"""

from __future__ import annotations

import os
import pickle
import uuid
from pathlib import Path

import pytest
import yaml
from kombu import Connection, Exchange, Producer

from tests.integration.helpers import wait_until

pytestmark = pytest.mark.integration


class Planted:
    """Unpickling this creates ``path``: proof that a payload was deserialised."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):  # noqa: ANN204
        return (open, (self.path, "w"))


def publish(broker_url: str, queue: str, task: str, body: bytes, content_type: str) -> str:
    task_id = str(uuid.uuid4())
    headers = {"lang": "py", "task": task, "id": task_id, "root_id": task_id,
               "parent_id": None, "group": None, "retries": 0, "eta": None, "expires": None,
               "argsrepr": "", "kwargsrepr": "", "origin": "intruder"}
    with Connection(broker_url) as conn:
        Producer(conn).publish(body, exchange=Exchange("risk", type="direct"), routing_key=queue,
                               content_type=content_type, content_encoding="binary",
                               headers=headers)
    return task_id


@pytest.mark.parametrize("content_type", ["application/x-python-serialize",
                                          "application/x-yaml"])
def test_pickle_and_yaml_messages_are_refused_and_never_run(rt, private_broker, tmp_path: Path,
                                                            content_type):
    # given: a worker on the control and ingest queues, and a stop that, were it run, would
    # halt trading
    worker = private_broker.start_worker(queues="control,ingest")
    planted = tmp_path / "unpickled"
    args = ["intruder", "mallory", "global", None]
    if content_type.endswith("serialize"):
        body = pickle.dumps(((*args[:1], Planted(str(planted)), *args[2:]), {}, {}))
    else:
        body = yaml.dump([args, {}, {}]).encode() + \
            b"\n# !!python/object/apply:os.system ['touch " + str(planted).encode() + b"']\n"
    # when: it is published straight to the queue, bypassing every client
    task_id = publish(private_broker.broker_url, "control", "risk.trigger_emergency_stop",
                      body, content_type)
    wait_until(lambda: private_broker.queue_length("control") == 0, timeout=20,
               message="the message taken off the queue")
    kind = "pickle" if content_type.endswith("serialize") else "yaml"
    refusal = wait_until(lambda: f"Refusing to deserialize untrusted content of type {kind}"
                         in worker.logs(), timeout=20, message="the refusal in the worker log")
    # then: refused, never deserialised, never run
    assert refusal
    assert not planted.exists()
    assert rt.store.platform_state()["state"] == "ACTIVE"
    assert f"[{task_id}] succeeded" not in worker.logs()
    assert f"[{task_id}] received" not in worker.logs()
    # and the worker is alive and serves JSON as before
    app = private_broker.app
    assert app.control.ping(destination=[worker.hostname], timeout=5)
    status = app.send_task("risk.emergency_status").get(timeout=20)
    assert status["status"]["state"] == "ACTIVE"


def test_the_app_accepts_json_only():
    from risk_tasks.app import app

    conf = app.conf
    assert list(conf.accept_content) == ["json"]
    assert list(conf.result_accept_content) == ["json"]
    assert (conf.task_serializer, conf.result_serializer, conf.event_serializer) == \
        ("json", "json", "json")
    assert os.environ.get("RISK_ACCEPT_CONTENT") is None  # no switch to widen it
