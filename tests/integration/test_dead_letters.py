"""Dead letters end to end: a venue failing for good exhausts the retries, the episode is
kept in ``dead_letters`` (and recorded failed, alerted, queued on ``dead_letter``), and
``riskctl dlq replay`` finishes it once the venue is back; ``list``, ``show`` and
``purge`` with their exit codes."""

from __future__ import annotations

import os
import subprocess
import sys
from decimal import Decimal

import orjson
import pytest

from models import tables as t
from tests.integration.action_world import ACTION_QUEUES, ActionWorld, http_env
from tests.integration.helpers import wait_until
from tests.support.gateway_stub import GatewayStub

pytestmark = pytest.mark.integration

TIMEOUT = 45.0


@pytest.fixture()
def world(rt, private_broker) -> ActionWorld:  # noqa: ANN001
    w = ActionWorld(rt, private_broker)
    w.symbol("BTC")
    w.symbol("ETH")
    return w


@pytest.fixture()
def stub():  # noqa: ANN201
    server = GatewayStub({"BTC": 45000, "ETH": 2800}).start()
    yield server
    server.stop()


def riskctl(broker, *args: str) -> tuple[int, object]:  # noqa: ANN001
    """Run ``riskctl`` as an operator would, against the test's broker; (exit code, JSON)."""
    env = dict(os.environ, **broker.env)
    proc = subprocess.run([sys.executable, "-m", "risk_tasks.cli", *args], env=env,
                          capture_output=True, timeout=60)
    out = proc.stdout.decode()
    try:
        data = orjson.loads(out) if out.strip() else None
    except orjson.JSONDecodeError:
        data = out
    return proc.returncode, data


def dead_letter_rows(world: ActionWorld, n: int = 1) -> list[t.DeadLetterRow]:
    def found() -> list[t.DeadLetterRow] | None:
        world.drain()
        rows = world.query(t.DeadLetterRow)
        return rows if len(rows) >= n else None

    return wait_until(found, timeout=TIMEOUT, message=f"{n} dead letter(s)")


def underwater(world: ActionWorld, account_id: str) -> None:
    world.prices({"BTC": 50000, "ETH": 3000})
    world.account(account_id, 1000)
    world.fill(account_id, "BTC", "BUY", 1, 50000)
    world.fill(account_id, "ETH", "BUY", 2, 3000)
    world.prices({"BTC": 45000, "ETH": 2800})


def test_a_venue_failing_for_good_is_dead_lettered_and_replay_finishes_the_episode(
        world, private_broker, stub):
    # given a venue that answers 503 to everything, and two retries allowed
    underwater(world, "F1")
    stub.fail_always(503)
    worker = private_broker.start_worker(queues=ACTION_QUEUES,
                                         env=http_env(stub, RISK_TASK_MAX_RETRIES="2"))
    # when the account is liquidated
    world.liquidate("F1", "ep-f1", reason="equity below maintenance")
    # then after three attempts the task is dead-lettered with everything needed to rerun it
    row = dead_letter_rows(world)[0]
    assert (row.task_name, row.attempts, row.status) == ("risk.liquidate_account", 3, "dead")
    assert row.args == ["F1", "equity below maintenance", "ep-f1"]
    assert row.idempotency_key == "ep-f1"
    assert "TransientGatewayError" in row.error and "HTTP 503" in row.error
    assert "Traceback" in row.traceback
    assert world.positions("F1") == {"BTC": Decimal(1), "ETH": Decimal(2)}
    # and the episode is recorded failed, a critical alert went out, the queue saw it
    wait_until(lambda: (world.drain(), [r.status for r in world.query(t.LiquidationRow)]
                        == ["failed"])[1], timeout=TIMEOUT, message="episode failed")
    alert = wait_until(lambda: (world.drain(), world.query(
        t.AlertRow, t.AlertRow.kind == "dead_letter"))[1], timeout=TIMEOUT,
        message="dead-letter alert")[0]
    assert (alert.level, alert.account_id, alert.policy) == (
        "critical", "F1", "risk.liquidate_account")
    wait_until(lambda: "dead letter received" in worker.logs(), message="risk.dead_letter ran")

    # when the venue is back and an operator replays it
    stub.heal()
    code, listed = riskctl(private_broker, "dlq", "list", "--json")
    assert code == 0 and [d["dead_letter_id"] for d in listed] == [row.dead_letter_id]
    code, shown = riskctl(private_broker, "dlq", "show", str(row.id), "--json")
    assert code == 0 and shown["args"] == row.args and "Traceback" in shown["traceback"]
    code, replayed = riskctl(private_broker, "dlq", "replay", row.dead_letter_id,
                             "--by", "alice", "--json")
    assert code == 0 and replayed["replayed"][0]["status"] == "replayed"
    # then the episode completes, once
    progress = world.wait_liquidated("ep-f1", timeout=TIMEOUT)
    assert progress["status"] == "completed"
    assert world.positions("F1") == {}
    assert sorted(o["symbol"] for o in stub.orders("F1")) == ["BTC", "ETH"]
    world.drain()
    assert [r.status for r in world.query(t.LiquidationRow)] == ["completed"]
    row = world.query(t.DeadLetterRow, t.DeadLetterRow.id == row.id)[0]
    assert (row.status, row.replayed_by) == ("replayed", "alice") and row.replay_task_id
    # and a second replay is refused (exit 1), unless forced
    code, refused = riskctl(private_broker, "dlq", "replay", row.dead_letter_id, "--json")
    assert code == 1 and "is replayed" in refused["refused"][0]["error"]


def test_a_venue_refusal_is_dead_lettered_at_once_and_purge_marks_it(world, private_broker, stub):
    # given a venue that refuses the request (422): retrying cannot help
    underwater(world, "P1")
    stub.fail_next(1, 422)
    private_broker.start_worker(queues=ACTION_QUEUES, env=http_env(stub))
    world.liquidate("P1", "ep-p1")
    row = dead_letter_rows(world)[0]
    assert row.attempts == 1 and "PermanentGatewayError" in row.error
    # when an operator purges it, it stays, marked
    code, data = riskctl(private_broker, "dlq", "purge", row.dead_letter_id, "--json")
    assert (code, data) == (0, {"purged": 1})
    code, listed = riskctl(private_broker, "dlq", "list", "--json")
    assert (code, listed) == (0, [])
    code, listed = riskctl(private_broker, "dlq", "list", "--status", "purged", "--json")
    assert [d["status"] for d in listed] == ["purged"]
    # and unknown ids and bad usage have their exit codes
    assert riskctl(private_broker, "dlq", "show", "dl-nope")[0] == 1
    assert riskctl(private_broker, "dlq", "purge", "dl-nope")[0] == 1
    assert riskctl(private_broker, "dlq", "purge")[0] == 2


def test_dead_letter_task_journals_an_entry_its_task_could_not(world, private_broker):
    # given a dead letter whose failing task could not journal it (Redis was away)
    private_broker.start_worker(queues="dead_letter")
    entry = {"dead_letter_id": "dl-manual-1", "task_name": "risk.unwind_account",
             "task_id": "manual-1", "args": ["A1", "stop-1"], "kwargs": {},
             "idempotency_key": "stop-1:A1", "error": "ConnectionError: gone",
             "traceback": None, "attempts": 6, "failure": "retries_exhausted",
             "at": 1795400000.0, "journaled": False}
    # when it reaches the dead_letter queue (twice, and with a malformed neighbour)
    world.app.send_task("risk.dead_letter", args=[entry])
    world.app.send_task("risk.dead_letter", args=[entry])
    world.app.send_task("risk.dead_letter", args=[["not", "an", "entry"]])
    # then it is stored once
    row = dead_letter_rows(world)[0]
    wait_until(lambda: private_broker.queue_length("dead_letter") == 0, message="queue empty")
    world.drain()
    assert len(world.query(t.DeadLetterRow)) == 1
    assert (row.dead_letter_id, row.task_name, row.args, row.attempts) == (
        "dl-manual-1", "risk.unwind_account", ["A1", "stop-1"], 6)
