"""``risk.send_alert`` on real workers: every sink (log, Redis pub/sub, webhook), alerts
of one policy and account de-duplicated across two workers at once, a webhook that fails
and recovers, and every alert stored in PostgreSQL."""

from __future__ import annotations

import threading
import time
import uuid

import orjson
import pytest

from models import tables as t
from risk_tasks import alerting
from tests.integration.action_world import FAST_RETRIES, ActionWorld
from tests.integration.helpers import wait_until
from tests.support.gateway_stub import GatewayStub

pytestmark = pytest.mark.integration

TIMEOUT = 30.0


@pytest.fixture()
def world(rt, private_broker) -> ActionWorld:  # noqa: ANN001
    return ActionWorld(rt, private_broker)


@pytest.fixture()
def hook():  # noqa: ANN201
    server = GatewayStub().start()
    yield server
    server.stop()


def sink_env(hook: GatewayStub) -> dict[str, str]:
    return {"RISK_ALERT_SINKS": "log,redis,webhook", "RISK_ALERT_WEBHOOK_URL": hook.url + "/webhook",
            **FAST_RETRIES}


class Subscriber:
    """Messages published on the alert channels, collected in a thread."""

    def __init__(self, client) -> None:  # noqa: ANN001
        self.pubsub = client.pubsub(ignore_subscribe_messages=True)
        self.pubsub.subscribe("risk.alerts.warning", "risk.alerts.critical",
                              "risk.alerts.emergency")
        self.messages: list[tuple[str, dict]] = []
        self.running = True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while self.running:
            message = self.pubsub.get_message(timeout=0.1)
            if message:
                self.messages.append((message["channel"].decode(), orjson.loads(message["data"])))

    def close(self) -> None:
        self.running = False
        self.thread.join(timeout=2)
        self.pubsub.close()


@pytest.fixture()
def subscriber(rt):  # noqa: ANN001, ANN201
    sub = Subscriber(rt.redis)
    yield sub
    sub.close()


def alert_rows(world: ActionWorld, n: int) -> list[t.AlertRow]:
    def stored() -> list[t.AlertRow] | None:
        world.drain()
        rows = world.query(t.AlertRow)
        return rows if len(rows) >= n else None

    return wait_until(stored, timeout=TIMEOUT, message=f"{n} alerts stored")


def test_duplicates_within_the_window_are_suppressed_across_two_workers(
        world, private_broker, hook, subscriber):
    # given two workers on the alerts queue, with every sink
    for _ in range(2):
        private_broker.start_worker(queues="alerts", env=sink_env(hook))
    # when twenty alerts of one policy and account arrive at once, and one of another account
    same = [alerting.make_alert("critical", "policy_violation", f"A1 breach {i}",
                                account_id="A1", policy="Min Margin Ratio") for i in range(20)]
    other = alerting.make_alert("warning", "policy_violation", "A2 breach", account_id="A2",
                                policy="Min Margin Ratio")
    for alert in same + [other]:
        world.app.send_task("risk.send_alert", args=[alert])
    # then each is stored, and only the first of A1's was delivered
    rows = alert_rows(world, 21)
    delivered = [r for r in rows if not r.deduplicated]
    assert sorted(r.account_id for r in delivered) == ["A1", "A2"]
    assert all(r.delivered_to == ["log", "redis", "webhook"] for r in delivered)
    assert sum(1 for r in rows if r.deduplicated and r.account_id == "A1") == 19
    assert all(r.delivered_to == [] for r in rows if r.deduplicated)
    # and every sink saw exactly one alert per account
    wait_until(lambda: len(subscriber.messages) >= 2, message="two published alerts")
    time.sleep(0.5)
    assert sorted((c, m["account_id"]) for c, m in subscriber.messages) == [
        ("risk.alerts.critical", "A1"), ("risk.alerts.warning", "A2")]
    assert sorted(w["alert"]["account_id"] for w in hook.webhooks) == ["A1", "A2"]
    a1 = next(w for w in hook.webhooks if w["alert"]["account_id"] == "A1")
    assert a1["text"].startswith("[CRITICAL] A1 breach")


def test_the_same_alert_delivered_twice_reaches_each_sink_once(world, private_broker, hook,
                                                              subscriber):
    private_broker.start_worker(queues="alerts", env=sink_env(hook))
    alert = alerting.make_alert("emergency", "emergency_stop", "platform halted")
    world.app.send_task("risk.send_alert", args=[alert])
    world.app.send_task("risk.send_alert", args=[alert])
    rows = alert_rows(world, 1)
    wait_until(lambda: private_broker.queue_length("alerts") == 0, message="queue empty")
    time.sleep(1.0)
    world.drain()
    rows = world.query(t.AlertRow)
    assert [(r.alert_id, r.deduplicated) for r in rows] == [(alert["alert_id"], False)]
    assert [c for c, _ in subscriber.messages] == ["risk.alerts.emergency"]
    assert len(hook.webhooks) == 1


def test_a_failing_webhook_is_retried_without_repeating_the_other_sinks(
        world, private_broker, hook, subscriber):
    # given a webhook that fails twice (503) before it takes the alert
    hook.fail_next(2, 503)
    private_broker.start_worker(queues="alerts,dead_letter", env=sink_env(hook))
    alert = alerting.make_alert("critical", "circuit_breaker", "A9 reducing", account_id="A9")
    world.app.send_task("risk.send_alert", args=[alert])
    # then it arrives once, and log and pub/sub were not repeated by the retries
    wait_until(lambda: hook.webhooks, timeout=TIMEOUT, message="webhook delivery")
    assert hook.count("POST", "/webhook") == 3
    row = wait_until(lambda: (world.drain(), [r for r in world.query(t.AlertRow)
                                              if r.delivered_to == ["log", "redis", "webhook"]])[1],
                     timeout=TIMEOUT, message="alert stored as delivered everywhere")[0]
    assert row.alert_id == alert["alert_id"]
    assert [m["alert_id"] for _, m in subscriber.messages] == [alert["alert_id"]]
    assert not world.query(t.DeadLetterRow)


def test_a_malformed_alert_is_dead_lettered_once_without_an_alert_about_itself(
        world, private_broker):
    private_broker.start_worker(queues="alerts,dead_letter", env=FAST_RETRIES)
    world.app.send_task("risk.send_alert", args=[{"alert_id": str(uuid.uuid4()), "level": "loud"}])
    world.app.send_task("risk.send_alert", args=["not a dict"])
    def dead_letters() -> list[t.DeadLetterRow] | None:
        world.drain()
        rows = world.query(t.DeadLetterRow)
        return rows if len(rows) >= 2 else None

    rows = wait_until(dead_letters, timeout=TIMEOUT, message="two dead letters")
    assert {(r.task_name, r.attempts) for r in rows} == {("risk.send_alert", 1)}
    assert sorted(r.error.split(":")[1].strip() for r in rows) == ["alert", "alert.kind"]
    time.sleep(0.5)
    world.drain()
    assert not world.query(t.AlertRow)  # no dead-letter alert fed back into send_alert


def test_claims_of_many_alerts_at_once_span_chunks_and_keep_each_window(rt) -> None:  # noqa: ANN001
    """The monitor claims thousands of windows in one round trip, a script call per
    chunk: every claim answers for its own key, a rival id loses with the time left, and
    an extension stretches only the windows its alerts hold."""
    n = alerting.CHUNK * 2 + 17
    mine = [alerting.make_alert("warning", "policy_violation", f"A{i} breach", account_id=f"A{i}",
                                policy="Concentration") for i in range(n)]
    assert all(won for won, _ in alerting.claim_many_for(rt.redis, mine, 30.0))
    # claiming again with the same ids: still ours (a retried send), with the time left
    again = alerting.claim_many_for(rt.redis, mine, 30.0)
    assert all(won and 29.0 < left <= 30.0 for won, left in again)
    rivals = [dict(a, alert_id=uuid.uuid4().hex) for a in mine[::2]] + [
        alerting.make_alert("warning", "policy_violation", "new", account_id="B1",
                            policy="Concentration")]
    outcome = alerting.claim_many_for(rt.redis, rivals, 300.0)
    assert [won for won, _ in outcome] == [False] * len(mine[::2]) + [True]
    assert all(29.0 < left <= 30.0 for _, left in outcome[:-1])
    assert outcome[-1][1] == 300.0
    # only the windows held by these ids stretch: the rival's extension changes nothing
    alerting.extend_many(rt.redis, mine[:5] + rivals[:3], 600.0)
    ttl = [rt.redis.pttl(alerting.dedup_key(a)) / 1000 for a in mine[:8]]
    assert all(590 < t <= 600 for t in ttl[:5]) and all(t <= 30 for t in ttl[5:])
    assert alerting.claim_keys(rt.redis, [], 30.0) == []
