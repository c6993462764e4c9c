"""``DirectSender`` pushes, onto the queue's list, the message kombu pushes for
``TaskSender``: a worker cannot tell them apart. Both are captured where they reach
Redis (``LPUSH``), on the real broker; when a direct send does not apply, ``RiskClient``
uses kombu's producer.
"""

from __future__ import annotations

import base64
from datetime import datetime

import orjson
import pytest
import redis
from celery import Celery, signals
from kombu import Exchange, Queue

from risk_tasks.app import DirectSender, TaskSender
from risk_tasks.client import RiskClient

pytestmark = pytest.mark.integration

PER_MESSAGE_HEADERS = {"id", "root_id", "expires"}
PER_MESSAGE_PROPERTIES = {"correlation_id", "delivery_tag", "expiration"}


@pytest.fixture()
def pushed(monkeypatch):  # noqa: ANN001, ANN201
    """(key, value) of every LPUSH in this process, recorded instead of sent."""
    seen: list[tuple[str, bytes]] = []

    def record(self, name, *values):  # noqa: ANN001, ANN202
        seen.extend((name.decode() if isinstance(name, bytes) else name, v) for v in values)
        return len(values)

    monkeypatch.setattr(redis.Redis, "lpush", record)
    return seen


def comparable(message: dict) -> dict:
    return {**message,
            "headers": {k: v for k, v in message["headers"].items()
                        if k not in PER_MESSAGE_HEADERS},
            "properties": {k: v for k, v in message["properties"].items()
                           if k not in PER_MESSAGE_PROPERTIES}}


@pytest.mark.parametrize("name, args", [
    ("risk.check_order", [{"order_id": "o-1", "account_id": "A", "symbol": "BTC",
                           "side": "buy", "quantity": "1.5", "order_type": "limit",
                           "price": "100.25", "note": "é \u2603"}]),
    ("risk.check_order_batch", [[{"order_id": "o-1"}, {"order_id": "o-2", "quantity": 3}]]),
    ("risk.get_risk_metrics", ["A"]),
])
def test_a_direct_send_pushes_what_kombu_pushes(app, pushed, name, args) -> None:  # noqa: ANN001
    # given: the same call sent both ways, 2 s before it expires
    queue = DirectSender.queue_of(app, name)
    assert queue == app.amqp.router.route({}, name)["queue"].name
    with app.producer_or_acquire() as producer:
        TaskSender.of(app, name).send(producer, args, "", task_id="t-kombu", expires=2.0,
                                      kwargsrepr="")
    DirectSender(app, name, queue).send(DirectSender.broker_client(app), args, "t-direct",
                                        2.0)
    # then: both went onto the same list
    (kombu_key, kombu_raw), (direct_key, direct_raw) = pushed
    assert kombu_key == direct_key == queue
    kombu_msg, direct_msg = orjson.loads(kombu_raw), orjson.loads(direct_raw)
    # and they differ only in the task id, the delivery tag and the clock
    assert comparable(direct_msg) == comparable(kombu_msg)
    assert base64.b64decode(direct_msg["body"]) == base64.b64decode(kombu_msg["body"])
    for message, task_id in ((kombu_msg, "t-kombu"), (direct_msg, "t-direct")):
        headers, properties = message["headers"], message["properties"]
        assert headers["id"] == headers["root_id"] == properties["correlation_id"] == task_id
        assert abs(int(properties["expiration"]) - 2000) < 1000
    assert kombu_msg["properties"]["delivery_tag"] != direct_msg["properties"]["delivery_tag"]
    expiries = [datetime.fromisoformat(m["headers"]["expires"]) for m in (kombu_msg, direct_msg)]
    assert abs((expiries[1] - expiries[0]).total_seconds()) < 1.0
    assert orjson.loads(base64.b64decode(direct_msg["body"]))[0] == args


def test_a_client_sends_directly_when_it_can(app, pushed) -> None:  # noqa: ANN001
    # given
    with RiskClient(app, timeout=0.3) as client:
        # when: nobody answers (the LPUSH was only recorded)
        result = client.check_order({"order_id": "o-1"})
        # then: the check went straight onto the pretrade list
        assert result["rejection_reason"] == "risk_timeout"
        assert [key for key, _ in pushed] == ["pretrade"]
        assert isinstance(client._senders["risk.check_order"], DirectSender)


def test_a_client_told_not_to_sends_through_kombu(app, pushed, monkeypatch) -> None:  # noqa: ANN001
    # given: kombu's producer, watched
    from kombu.messaging import Producer

    published = []
    publish = Producer.publish

    def watched(self, body, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        published.append(kwargs.get("routing_key"))
        return publish(self, body, *args, **kwargs)

    monkeypatch.setattr(Producer, "publish", watched)
    with RiskClient(app, timeout=0.3, direct=False) as client:
        # when
        client.check_order({"order_id": "o-1"})
    # then
    assert published == ["pretrade"]
    assert [key for key, _ in pushed] == ["pretrade"]
    assert client._senders == {}


def test_a_publish_signal_receiver_gets_the_message_through_kombu(app, pushed) -> None:  # noqa: ANN001
    # given: something listening to Celery's publish signal
    seen = []

    def receiver(sender=None, headers=None, **_kwargs):  # noqa: ANN001, ANN202
        seen.append((sender, headers["id"]))

    signals.before_task_publish.connect(receiver, weak=False)
    try:
        assert not DirectSender.usable(app)
        with RiskClient(app, timeout=0.3) as client:
            # when
            client.check_order({"order_id": "o-1"})
    finally:
        signals.before_task_publish.disconnect(receiver)
    # then: kombu sent it, and the receiver saw it
    assert [name for name, _ in seen] == ["risk.check_order"]
    assert [key for key, _ in pushed] == ["pretrade"]
    assert "risk.check_order" not in client._senders


def test_what_a_direct_send_does_not_cover_goes_through_kombu() -> None:
    app = Celery("risk-routes", set_as_current=False)
    app.config_from_object("celeryconfig")
    app.conf.task_routes = {
        "risk.check_order": {"queue": Queue("pretrade-topic", Exchange("t", type="topic"),
                                            routing_key="p.#")},
        "risk.check_order_batch": {"queue": "pretrade", "priority": 5},
    }
    plain = app.amqp.router.route({}, "risk.get_risk_metrics")["queue"].name
    assert DirectSender.queue_of(app, "risk.get_risk_metrics") == plain  # the default queue
    assert DirectSender.queue_of(app, "risk.check_order") is None
    assert DirectSender.queue_of(app, "risk.check_order_batch") is None
    for options in ({"global_keyprefix": "x:"}, {"master_name": "m"}):
        app.conf.broker_transport_options = options
        assert DirectSender.broker_client(app) is None
    app.conf.broker_transport_options = {}
    app.conf.broker_url = "redis://127.0.0.1:1/0;redis://127.0.0.1:2/0"
    assert DirectSender.broker_client(app) is None
