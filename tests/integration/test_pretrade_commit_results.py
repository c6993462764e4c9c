"""A check's commit stores its task's result (risk_tasks.result_backend.SuccessTarget):
the document Celery would store, for single checks and batches, and never a result that
an approval racing a state change would have made wrong."""

from __future__ import annotations

from datetime import datetime

import orjson
import pytest

from risk_tasks.engine.model import TradingState
from risk_tasks.fastpath import PlainCall

pytestmark = pytest.mark.integration


@pytest.fixture()
def market(btc_market):  # noqa: ANN001, ANN201
    return btc_market


def stored(app, task_id: str) -> dict:  # noqa: ANN001
    """A stored result document, without the fields that differ by task and time."""
    backend = app.backend
    meta = backend.decode(backend.client.get(backend.get_key_for_task(task_id)))
    assert meta.pop("task_id") == task_id
    assert datetime.fromisoformat(meta.pop("date_done")).tzinfo is not None
    return meta


def celerys_document(app, task_id: str, result: object) -> dict:  # noqa: ANN001
    app.backend.store_result(task_id, result, "SUCCESS",
                             request=PlainCall(task_id, "risk.check_order_batch", "h", [], {},
                                               None))
    return stored(app, task_id)


def halt_after_the_read(market, monkeypatch) -> list[int]:  # noqa: ANN001
    """Trigger an emergency stop once, after the first decision was read and made (before
    its commit). Returns a list that counts the decisions made."""
    service = market.rt.pretrade
    decide = service._replay_or_decide
    made: list[int] = []

    def and_then_halt(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        outcome = decide(*args, **kwargs)
        made.append(1)
        if len(made) == 1:
            market.rt.store.set_platform_state(TradingState.HALTED, "drill", "ops", "stop-1")
        return outcome

    monkeypatch.setattr(service, "_replay_or_decide", and_then_halt)
    return made


def test_a_batch_stores_its_list_of_results_in_its_commit(app, market):
    # given: a repeated order, an invalid one, a duplicate within the batch and new ones
    earlier = market.order(quantity=1)
    first = market.check(earlier)
    twice = market.order(quantity=2)
    batch = [earlier, {"order_id": "bad"}, twice, market.order(quantity=3), twice]
    target = app.backend.success_target("commit-batch")
    # when
    outcomes = market.rt.pretrade.check_batch(batch, target)
    # then: every outcome says the batch's result was stored, and it is Celery's document
    # of the same list, which the caller reads back
    results = [o.result for o in outcomes]
    assert [o.replied for o in outcomes] == [True] * 5
    assert results[0] == first and results[4] == results[2]
    assert results[1]["rejection_reason"] == "invalid_request"
    assert stored(app, "commit-batch") == celerys_document(app, "celery-batch", results)
    assert app.AsyncResult("commit-batch").get(timeout=5) == results
    assert 0 < app.backend.client.ttl(target.key) <= target.expires


def test_a_batch_of_replays_and_invalid_orders_leaves_its_result_to_the_worker(app, market):
    # given: nothing in the batch to commit
    earlier = market.order(quantity=1)
    market.check(earlier)
    target = app.backend.success_target("commit-none")
    # when
    outcomes = market.rt.pretrade.check_batch([earlier, 42], target)
    # then
    assert [o.replied for o in outcomes] == [False, False]
    assert app.backend.client.get(target.key) is None


def test_an_approval_that_raced_a_stop_is_decided_again_and_only_that_is_stored(
        app, market, monkeypatch):
    # given: the platform halts between the check's read and its commit
    made = halt_after_the_read(market, monkeypatch)
    target = app.backend.success_target("commit-raced")
    # when
    outcome = market.rt.pretrade.check(market.order(quantity=1), target)
    # then: the approval was refused at its commit and the order decided again, under
    # the stop; the second commit stored that decision as the task's result
    assert len(made) == 2
    assert outcome.result["approved"] is False
    assert outcome.result["rejection_reason"] == "emergency_stop_active"
    assert outcome.replied
    assert app.AsyncResult("commit-raced").get(timeout=5) == outcome.result


def test_a_batch_whose_approval_raced_a_stop_leaves_its_result_to_the_worker(
        app, market, monkeypatch):
    # given: the platform halts after the batch's first decision, before its commit
    made = halt_after_the_read(market, monkeypatch)
    target = app.backend.success_target("commit-raced-batch")
    orders = [market.order(quantity=1), market.order(quantity=2)]
    # when
    outcomes = market.rt.pretrade.check_batch(orders, target)
    # then: both approvals were refused at the commit and decided again, under the stop
    assert len(made) == 4
    assert [o.result["rejection_reason"] for o in outcomes] == ["emergency_stop_active"] * 2
    assert [o.replied for o in outcomes] == [False, False]
    assert app.backend.client.get(target.key) is None


def test_through_the_worker_a_batch_is_answered_from_its_commit(app, market, rt):
    # given: every command the Redis server runs, and where it came from
    commands: list[tuple[str, str]] = []
    orders = [market.order(quantity=1), {"order_id": "bad"}, market.order(quantity=2)]
    with rt.store.redis.monitor() as monitor:
        # when
        sent = app.send_task("risk.check_order_batch", [orders])
        results = sent.get(timeout=10)
        for command in monitor.listen():
            commands.append((command.get("client_type"), command["command"]))
            if sent.id in command["command"] and command["command"].startswith("PUBLISH"):
                break
    # then: the caller got the batch's decisions, written inside the commit script
    assert [r["approved"] for r in results] == [True, False, True]
    writes = sorted((source, c.split()[0]) for source, c in commands
                    if c.startswith(("SET ", "PUBLISH ")) and sent.id in c)
    assert writes == [("lua", "PUBLISH"), ("lua", "SET")], commands
    assert orjson.loads(orjson.dumps(results)) == app.AsyncResult(sent.id).get(timeout=5)
