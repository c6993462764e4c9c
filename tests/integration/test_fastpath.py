"""The lean pre-trade strategy (risk_tasks/fastpath.py) on a real solo worker: a plain
call is answered and counted like any task; what it does not handle goes to Celery's
default strategy and behaves as Celery always does."""

import threading
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from celery.exceptions import TaskRevokedError

from risk_tasks.engine.model import SymbolSpec
from risk_tasks.fastpath import PlainCall, _expired, result_repr

pytestmark = pytest.mark.integration


def order(order_id: str) -> dict:
    return {"order_id": order_id, "account_id": "FP", "symbol": "BTC", "side": "BUY",
            "quantity": 1, "order_type": "MARKET"}


@pytest.fixture()
def priced(rt):  # noqa: ANN001, ANN201
    rt.store.put_symbols([SymbolSpec("BTC", Decimal("0.1"), Decimal("0.05"))])
    rt.store.upsert_account({"account_id": "FP", "balance": Decimal(1000)})
    rt.store.ingest_prices({"BTC": Decimal(100)}, time.time())


def processed(app, worker) -> int:  # noqa: ANN001
    stats = app.control.inspect(destination=[worker.hostname], timeout=5).stats()
    return stats[worker.hostname]["total"].get("risk.check_order", 0)


def test_a_plain_check_is_answered_stored_and_counted(app, session_worker, priced):
    # given
    before = processed(app, session_worker)
    # when
    result = app.send_task("risk.check_order", [order("fp-1")])
    decision = result.get(timeout=10)
    # then: the caller's answer, the stored result and the worker's count
    assert decision["approved"] is True
    assert app.AsyncResult(result.id).state == "SUCCESS"
    assert processed(app, session_worker) == before + 1


def test_an_expired_check_goes_through_celerys_default_strategy(app, session_worker, priced):
    # given: a message whose caller gave up before it was taken
    expired = datetime.now(timezone.utc) - timedelta(seconds=5)
    # when
    result = app.send_task("risk.check_order", [order("fp-2")], expires=expired)
    # then: revoked as Celery does it, never decided
    with pytest.raises(TaskRevokedError):
        result.get(timeout=10)
    assert app.send_task("risk.check_order", [order("fp-3")]).get(timeout=10)["approved"]


def test_pretrade_tasks_send_no_task_events_while_the_others_do(app, session_worker, priced):
    # given: a receiver of every event on the broker (as Flower is)
    seen: list[tuple[str, str | None]] = []
    with app.connection_for_read() as connection:
        receiver = app.events.Receiver(
            connection, handlers={"*": lambda e: seen.append((e["type"], e.get("uuid")))})
        listener = threading.Thread(target=receiver.capture,
                                    kwargs={"limit": None, "timeout": None, "wakeup": False},
                                    daemon=True)
        listener.start()
        try:
            def succeeded(task_id: str) -> bool:
                return ("task-succeeded", task_id) in seen

            def control_task_seen() -> bool:
                status = app.send_task("risk.emergency_status")
                status.get(timeout=10)
                deadline = time.monotonic() + 3
                while time.monotonic() < deadline and not succeeded(status.id):
                    time.sleep(0.05)
                return succeeded(status.id)

            # the receiver is listening once a control task's events come through
            deadline = time.monotonic() + 20
            while not control_task_seen():
                assert time.monotonic() < deadline, "no task events at all"
            # when: a check, then another control task after it
            check = app.send_task("risk.check_order", [order("fp-ev")])
            assert check.get(timeout=10)["approved"] is True
            assert control_task_seen()
        finally:
            receiver.should_stop = True
            listener.join(timeout=10)
    # then: the control task was seen, the check (RISK_PRETRADE_TASK_EVENTS off) was not
    assert not [e for e in seen if e[1] == check.id]


def test_the_fast_result_write_stores_and_publishes_what_celery_would(app):
    backend = app.backend
    decision = {"order_id": "o-1", "approved": True, "violations": [],
                "rejection_reason": None, "message": None,
                "post_trade_metrics": {"equity": 1234.5, "margin_ratio": None,
                                       "concentration": {"BTC": 0.25}},
                "processing_time_us": 310}
    request = PlainCall("fp-celery", "risk.check_order", "h", [], {}, None)

    def stored(task_id: str) -> dict:
        meta = backend.decode(backend.client.get(backend.get_key_for_task(task_id)))
        assert meta.pop("task_id") == task_id
        assert datetime.fromisoformat(meta.pop("date_done")).tzinfo is not None
        return meta

    # when: Celery's own write, and the fast path's
    backend.store_result("fp-celery", decision, "SUCCESS", request=request)
    backend.store_plain_success("fp-fast", decision)
    # then: the same document, which a caller reads back as the decision
    assert stored("fp-fast") == stored("fp-celery")
    assert app.AsyncResult("fp-fast").get(timeout=5) == decision


def test_a_check_stores_its_result_in_its_commit_and_a_replay_in_the_fast_write(
        app, session_worker, priced, rt):
    # given: every command the Redis server runs, and where it came from
    commands: list[str] = []
    with rt.store.redis.monitor() as monitor:
        # when: a check, then the same order again (replayed at the read)
        first = app.send_task("risk.check_order", [order("fp-fold")])
        decision = first.get(timeout=10)
        again = app.send_task("risk.check_order", [order("fp-fold")])
        assert again.get(timeout=10) == decision
        for command in monitor.listen():
            commands.append((command.get("client_type"), command["command"]))
            if again.id in command["command"] and command["command"].startswith("PUBLISH"):
                break

    def writes_of(task_id: str) -> list[tuple[str, str]]:
        return sorted((source, c.split()[0]) for source, c in commands
                      if c.startswith(("SET ", "PUBLISH ")) and task_id in c)

    # then: the decision's result was written (and published) inside the commit script,
    # the replay's by the worker's own round trip
    assert writes_of(first.id) == [("lua", "PUBLISH"), ("lua", "SET")], commands
    replay_writes = writes_of(again.id)
    assert [w for _, w in replay_writes] == ["PUBLISH", "SET"]
    assert "lua" not in [source for source, _ in replay_writes]
    assert app.AsyncResult(first.id).state == "SUCCESS"
    assert app.AsyncResult(again.id).get(timeout=5) == decision


def test_a_committed_result_is_the_document_celery_stores(app, rt, priced):
    from risk_tasks.result_backend import SuccessTarget

    backend = app.backend
    target = backend.success_target("fp-commit")
    # when: a check whose commit stores its task's result, and one on another server
    outcome = rt.pretrade.check(order("fp-commit-1"), target)
    elsewhere = SuccessTarget("fp-elsewhere", backend.get_key_for_task("fp-elsewhere"),
                              target.db, target.expires, "another server", backend)
    other = rt.pretrade.check(order("fp-commit-2"), elsewhere)
    # then: the first is stored as Celery would store it, with its expiry; the second
    # is left to the caller of check() to store
    assert outcome.replied and not other.replied
    backend.store_result("fp-celery-doc", outcome.result, "SUCCESS",
                         request=PlainCall("fp-celery-doc", "risk.check_order", "h", [], {}, None))
    ours = backend.decode(backend.client.get(target.key))
    celerys = backend.decode(backend.client.get(backend.get_key_for_task("fp-celery-doc")))
    assert ours.pop("task_id") == "fp-commit" and celerys.pop("task_id") == "fp-celery-doc"
    assert datetime.fromisoformat(ours.pop("date_done")).tzinfo is not None
    celerys.pop("date_done")
    assert ours == celerys
    assert 0 < backend.client.ttl(target.key) <= target.expires
    assert backend.client.get(elsewhere.key) is None
    # and the state store's own keys stayed in its database
    assert rt.store.redis.get(target.key) is None


def test_expiry_parsing():
    now = datetime.now(timezone.utc)
    assert _expired((now - timedelta(seconds=1)).isoformat())
    assert not _expired((now + timedelta(seconds=5)).isoformat())
    assert not _expired((now + timedelta(seconds=5)).replace(tzinfo=None).isoformat())
    assert _expired("not a date")  # left to the default strategy to judge


def test_result_repr_is_the_start_of_the_results_json():
    decision = {"order_id": "o1", "approved": False, "violations": ["x" * 200],
                "rejection_reason": "insufficient_margin"}
    short = result_repr(decision, 40)
    assert short == '{"order_id":"o1","approved":false,"viola...'
    assert result_repr({"ok": True}, 96) == '{"ok":true}'
    # what JSON cannot render falls back to Celery's saferepr
    assert result_repr({"n": Decimal("1.5")}, 96) == "{'n': Decimal('1.5')}"
