"""kombu's Redis transport with the action batches' patches (``risk_tasks.kombu_patches``):
many messages per fetch, recorded as unacknowledged exactly as kombu records one, never
lost, and a batch's acknowledgements in one round trip. Real Redis and kombu, no
worker (``test_liquidation_batches.py`` runs them in one)."""

from __future__ import annotations

import base64
import json
import os
import time

import pytest
import redis
from kombu import Connection, Consumer, Exchange, Producer, Queue

from risk_tasks import kombu_patches

pytestmark = pytest.mark.integration

EXCHANGE = Exchange("mf-x", type="direct")
BATCHED = Queue("mf-batched", EXCHANGE, routing_key="mf-batched")
ONE_BY_ONE = Queue("mf-single", EXCHANGE, routing_key="mf-single")


@pytest.fixture()
def url(app) -> str:  # noqa: ANN001 - the app applies the patches
    url = os.environ["RISK_BROKER_URL"].rsplit("/", 1)[0] + "/5"
    redis.Redis.from_url(url).flushdb()
    kombu_patches.enable_multi_fetch(BATCHED.name)
    return url


def connect(url: str, visibility_timeout: float = 3600) -> Connection:
    return Connection(url, transport_options={"visibility_timeout": visibility_timeout})


def publish(url: str, queue: Queue, n: int) -> None:
    with connect(url) as conn:
        producer = Producer(conn.channel(), exchange=EXCHANGE)
        for i in range(n):
            producer.publish({"n": i}, routing_key=queue.routing_key, declare=[queue],
                             serializer="json")


def consume_once(conn: Connection, queue: Queue, prefetch: int) -> tuple[list, object]:
    """One fetch (one ``drain_events``) with ``prefetch``; the messages delivered."""
    channel = conn.channel()
    received: list = []
    consumer = Consumer(channel, queues=[queue], accept=["json"],
                        callbacks=[lambda body, message: received.append(message)])
    consumer.qos(prefetch_count=prefetch)
    consumer.consume()
    conn.drain_events(timeout=5)
    return received, channel


def test_a_fetch_takes_up_to_the_free_prefetch_and_records_each_as_kombu_does(url):
    # given twenty messages on a batched queue
    publish(url, BATCHED, 20)
    client = redis.Redis.from_url(url)
    with connect(url) as conn:
        # when a consumer with a prefetch of 8 fetches once
        received, channel = consume_once(conn, BATCHED, prefetch=8)
        # then it got the first 8, in order, and 12 wait on the queue
        assert [m.decode()["n"] for m in received] == list(range(8))
        assert client.llen(BATCHED.name) == 12
        # and each is recorded as unacknowledged as kombu's QoS.append records one:
        # [payload, exchange, routing key] under its delivery tag, indexed by time
        qos = channel.qos
        for message in received:
            entry = json.loads(client.hget(qos.unacked_key, message.delivery_tag))
            assert entry == [message._raw, EXCHANGE.name, BATCHED.routing_key]
            assert abs(client.zscore(qos.unacked_index_key, message.delivery_tag)
                       - time.time()) < 60
        assert client.hlen(qos.unacked_key) == 8
        assert not qos.can_consume()
        # when the batch is acknowledged in one go
        kombu_patches.ack_all(received)
        # then nothing is left unacknowledged and the consumer can take more
        assert client.hlen(qos.unacked_key) == 0
        assert client.zcard(qos.unacked_index_key) == 0
        assert all(m.acknowledged for m in received)
        assert qos.can_consume()


def test_messages_taken_and_never_acknowledged_come_back_after_the_visibility_timeout(url):
    # given a consumer that took 8 of 10 messages in one fetch and then died (no
    # acknowledgement, no restore at shutdown)
    publish(url, BATCHED, 10)
    client = redis.Redis.from_url(url)
    with connect(url, visibility_timeout=1) as conn:
        received, channel = consume_once(conn, BATCHED, prefetch=8)
        assert len(received) == 8
        channel.qos.restore_at_shutdown = False
    assert client.llen(BATCHED.name) == 2
    # when the visibility timeout has passed and kombu restores what is overdue
    time.sleep(1.5)
    with connect(url, visibility_timeout=1) as conn:
        conn.channel().qos.restore_visible(num=100)
    # then all ten are on the queue again, none lost, none doubled
    ns = sorted(json.loads(base64.b64decode(json.loads(raw)["body"]))["n"]
                for raw in client.lrange(BATCHED.name, 0, -1))
    assert ns == list(range(10))


def test_a_queue_that_is_not_batched_is_taken_one_message_per_fetch(url):
    # given five messages on a queue whose tasks run as they arrive
    publish(url, ONE_BY_ONE, 5)
    with connect(url) as conn:
        # when a consumer with room for eight fetches once
        received, _ = consume_once(conn, ONE_BY_ONE, prefetch=8)
        # then it took one: the rest stay for whichever worker is free first
        assert len(received) == 1
        assert redis.Redis.from_url(url).llen(ONE_BY_ONE.name) == 4


def test_an_unreadable_message_among_the_taken_ones_is_dropped_and_the_rest_delivered(url):
    # given a readable message, then garbage, then two readable ones
    client = redis.Redis.from_url(url)
    publish(url, BATCHED, 1)
    client.lpush(BATCHED.name, b"\xff not json")
    publish(url, BATCHED, 2)
    with connect(url) as conn:
        # when one fetch takes them all
        received, channel = consume_once(conn, BATCHED, prefetch=8)
        # then the three readable ones are delivered and recorded; the garbage is gone
        assert [m.decode()["n"] for m in received] == [0, 0, 1]
        assert client.llen(BATCHED.name) == 0
        assert client.hlen(channel.qos.unacked_key) == 3
        kombu_patches.ack_all(received)


def test_a_delivery_interrupted_half_way_gives_the_rest_back_at_once(url):
    # given eight messages and a consumer that fails on the third it is handed
    publish(url, BATCHED, 8)
    client = redis.Redis.from_url(url)
    handed: list = []

    def on_message(body, message):  # noqa: ANN001, ANN202
        handed.append(message)
        if len(handed) == 3:
            raise RuntimeError("consumer failed")

    with connect(url) as conn:
        channel = conn.channel()
        consumer = Consumer(channel, queues=[BATCHED], accept=["json"], callbacks=[on_message])
        consumer.qos(prefetch_count=8)
        consumer.consume()
        # when one fetch takes all eight and the third delivery fails
        with pytest.raises(RuntimeError):
            conn.drain_events(timeout=5)
        # then the three handed over are recorded as unacknowledged, and the five never
        # handed over are back on the queue at once (not after the visibility timeout)
        assert len(handed) == 3
        assert client.hlen(channel.qos.unacked_key) == 3
        assert client.llen(BATCHED.name) == 5
        waiting = sorted(json.loads(base64.b64decode(json.loads(raw)["body"]))["n"]
                         for raw in client.lrange(BATCHED.name, 0, -1))
        assert waiting == [3, 4, 5, 6, 7]
        kombu_patches.ack_all(handed)
