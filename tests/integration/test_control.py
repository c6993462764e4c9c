"""Emergency stop and resume through the control tasks, seen by every pretrade worker
at once, and recorded in PostgreSQL with who, why and when.

The control tasks run on the session worker (queue ``control``). The test that proves a
stop reaches every pretrade worker starts two dedicated pretrade workers on a private
broker, so that no other worker can take its checks, and reads from the audit records
which worker process made each decision.
"""

from __future__ import annotations

import uuid

import pytest

from models.tables import EmergencyStopRow, OperatorActionRow, TradingStateChangeRow
from tests.integration.helpers import World, wait_until, worker_id

pytestmark = pytest.mark.integration


@pytest.fixture()
def market(world, session_worker):  # noqa: ANN001, ANN201
    """BTC at 100 (10x), the default policies, accounts A and B with 10 000 each."""
    world.default_policies()
    world.symbol("BTC")
    world.prices({"BTC": 100})
    world.account("A", 10_000)
    world.account("B", 10_000)
    return world


def stop(world: World, **kwargs) -> dict:  # noqa: ANN003
    return world.control("trigger_emergency_stop", **{"reason": "drill", "triggered_by": "ops",
                                                      **kwargs})


def resume(world: World, by: str = "alice", **kwargs) -> dict:  # noqa: ANN003
    return world.control("re_enable_trading", **{"authorized_by": by,
                                                 "reason": "drill over", **kwargs})


def assert_control_result(result: dict) -> None:
    assert set(result) >= {"success", "message", "status"}, result
    assert isinstance(result["success"], bool) and isinstance(result["message"], str)
    assert result["message"]


def decisions_by_worker(checks: World, workers: set[str], account_id: str = "A",
                        timeout: float = 30.0) -> tuple[list[dict], set[str]]:
    """Send rounds of checks until every worker in ``workers`` has decided some.

    Returns every decision and the workers that made them (read from the audit
    records, which carry the deciding process).
    """
    results: list[dict] = []
    seen: set[str] = set()

    def one_round() -> bool:
        pending = [checks.app.send_task("risk.check_order", [checks.order(account_id=account_id)])
                   for _ in range(8)]
        round_results = [p.get(timeout=20) for p in pending]
        results.extend(round_results)
        ids = {r["order_id"] for r in round_results}
        seen.update(rec["w"] for rec in checks.audit_records() if rec["r"]["order_id"] in ids)
        return seen >= workers

    wait_until(one_round, timeout=timeout, interval=0,
               message=f"decisions from every worker of {sorted(workers)}")
    return results, seen


# -- STOP AND RESUME --

def test_global_stop_is_seen_at_once_by_every_pretrade_worker(market, private_broker):
    # given: two pretrade worker processes, both approving
    workers = [private_broker.start_worker(queues="pretrade",
                                           name=f"pretrade-{n}-{uuid.uuid4().hex[:6]}")
               for n in (1, 2)]
    ids = {worker_id(w) for w in workers}
    checks = World(market.rt, private_broker.app)
    before, seen = decisions_by_worker(checks, ids)
    assert all(r["approved"] for r in before)
    assert seen == ids
    # when: an operator stops trading (on the control worker)
    result = stop(market, reason="exchange incident")
    # then: from the next check on, both workers reject every order
    assert_control_result(result)
    assert result["success"] is True and result["created"] is True
    assert result["stop_id"].startswith("stop-")
    assert result["status"]["state"] == "HALTED" and result["status"]["active"] is True
    assert result["status"]["stop_id"] == result["stop_id"]
    during, seen = decisions_by_worker(checks, ids)
    assert seen == ids
    assert {r["rejection_reason"] for r in during} == {"emergency_stop_active"}

    # when: a second stop while the first is active
    again = stop(market, reason="second operator, same incident")
    # then: the same stop, not a new one
    assert again["success"] is True and again["created"] is False
    assert again["stop_id"] == result["stop_id"]

    # when: an allowed operator resumes
    resumed = resume(market)
    # then: both workers approve again
    assert resumed["success"] is True and resumed["status"]["state"] == "ACTIVE"
    after, seen = decisions_by_worker(checks, ids)
    assert seen == ids
    assert all(r["approved"] for r in after)


def test_resume_is_refused_to_an_operator_not_on_the_allow_list(market):
    # given
    stopped = stop(market)
    # when
    refused = resume(market, by="mallory")
    still = market.check(market.order())
    accepted = resume(market, by="alice")
    passes = market.check(market.order())
    # then
    assert_control_result(refused)
    assert refused["success"] is False
    assert "mallory" in refused["message"] and "not allowed" in refused["message"]
    assert refused["status"]["state"] == "HALTED"
    assert still["rejection_reason"] == "emergency_stop_active"
    assert accepted["success"] is True and accepted["status"]["state"] == "ACTIVE"
    assert passes["approved"] is True
    # and the refused attempt is on record, between the stop and the resume
    market.rt.drainer.drain()
    actions = [(a.action, a.operator, a.allowed) for a in market.rows(OperatorActionRow)]
    assert actions == [("emergency_stop", "ops", True),
                       ("re_enable_trading", "mallory", False),
                       ("re_enable_trading", "alice", True)]
    refusal = market.rows(OperatorActionRow)[1]
    assert refusal.reason == "drill over"
    assert refusal.details["scope"] == "global"
    assert market.rows(OperatorActionRow)[2].details["stop_id"] == stopped["stop_id"]


def test_stop_and_resume_are_recorded_in_postgres(market):
    # given / when
    stopped = stop(market, reason="exchange incident", triggered_by="ops")
    resume(market, by="alice", reason="exchange back")
    market.rt.drainer.drain()
    # then: the stop, with who and why, resolved by whom
    (row,) = market.rows(EmergencyStopRow)
    assert (row.stop_id, row.scope, row.account_id) == (stopped["stop_id"], "global", None)
    assert (row.triggered_by, row.reason) == ("ops", "exchange incident")
    assert (row.status, row.resolved_by, row.resolve_reason) == ("resolved", "alice",
                                                                 "exchange back")
    assert row.triggered_at is not None and row.resolved_at >= row.triggered_at
    # and both changes of the platform's trading state
    changes = [(c.old_state, c.new_state, c.changed_by, c.reason, c.stop_id)
               for c in market.rows(TradingStateChangeRow) if c.scope == "global"]
    assert changes == [("ACTIVE", "HALTED", "ops", "exchange incident", stopped["stop_id"]),
                       ("HALTED", "ACTIVE", "alice", "exchange back", None)]


def test_account_stop_halts_only_that_account_until_resumed(market):
    # when
    stopped = stop(market, scope="account", account_id="A", reason="suspicious flow")
    on_a = market.check(market.order(account_id="A"))
    on_b = market.check(market.order(account_id="B"))
    again = stop(market, scope="account", account_id="A", reason="again")
    resumed = resume(market, scope="account", account_id="A", reason="cleared")
    after = market.check(market.order(account_id="A"))
    # then
    assert stopped["success"] is True and stopped["created"] is True
    assert stopped["status"]["state"] == "ACTIVE"
    assert stopped["status"]["restricted_accounts"] == ["A"]
    assert on_a["rejection_reason"] == "account_halted"
    assert on_b["approved"] is True
    assert (again["created"], again["stop_id"]) == (False, stopped["stop_id"])
    assert resumed["success"] is True and resumed["status"]["restricted_accounts"] == []
    assert after["approved"] is True
    # and on record
    market.rt.drainer.drain()
    (row,) = market.rows(EmergencyStopRow)
    assert (row.scope, row.account_id, row.triggered_by, row.reason) == \
        ("account", "A", "ops", "suspicious flow")
    assert (row.status, row.resolved_by) == ("resolved", "alice")
    changes = [(c.account_id, c.old_state, c.new_state, c.changed_by)
               for c in market.rows(TradingStateChangeRow)
               if c.scope == "account" and c.old_state is not None]
    assert changes == [("A", "ACTIVE", "HALTED", "ops"), ("A", "HALTED", "ACTIVE", "alice")]


def test_emergency_status_reports_the_active_stop(market):
    # given
    idle = market.control("emergency_status")
    stopped = stop(market, reason="status check")
    # when
    status = market.control("emergency_status")
    # then
    assert_control_result(idle)
    assert idle["status"]["active"] is False and idle["status"]["state"] == "ACTIVE"
    assert status["success"] is True
    assert status["status"]["active"] is True
    assert (status["status"]["stop_id"], status["status"]["by"], status["status"]["reason"]) \
        == (stopped["stop_id"], "ops", "status check")


def test_resume_when_nothing_is_stopped_succeeds_and_changes_nothing(market):
    result = resume(market)

    assert result["success"] is True
    assert "already active" in result["message"]
    assert result["status"]["state"] == "ACTIVE"


# -- MALFORMED CONTROL CALLS --

MALFORMED_STOPS = {
    "empty reason": ({"reason": ""}, "reason"),
    "blank reason": ({"reason": "   "}, "reason"),
    "no reason": ({"reason": None}, "reason"),
    "reason not text": ({"reason": {"why": "x"}}, "reason"),
    "reason too long": ({"reason": "x" * 1001}, "reason"),
    "empty triggered_by": ({"triggered_by": ""}, "triggered_by"),
    "numeric triggered_by": ({"triggered_by": 5}, "triggered_by"),
    "bad scope": ({"scope": "galaxy"}, "scope"),
    "account scope without account": ({"scope": "account"}, "account_id"),
    "account id with global scope": ({"scope": "global", "account_id": "A"}, "account_id"),
    "unknown account": ({"scope": "account", "account_id": "nobody"}, "nobody"),
}


@pytest.mark.parametrize("changes, mentioned", MALFORMED_STOPS.values(),
                         ids=MALFORMED_STOPS.keys())
def test_malformed_stop_is_refused_with_a_message(market, changes, mentioned):
    # when
    result = stop(market, **changes)
    # then: refused, nothing halted
    assert_control_result(result)
    assert result["success"] is False
    assert mentioned in result["message"]
    assert result["status"]["state"] == "ACTIVE"
    assert result["status"]["restricted_account_count"] == 0
    assert market.check(market.order())["approved"] is True


MALFORMED_RESUMES = {
    "empty reason": ({"reason": ""}, "reason"),
    "no authorizer": ({"by": None}, "authorized_by"),
    "bad scope": ({"scope": "everything"}, "scope"),
    "account scope without account": ({"scope": "account"}, "account_id"),
    "unknown account": ({"scope": "account", "account_id": "nobody"}, "nobody"),
}


@pytest.mark.parametrize("changes, mentioned", MALFORMED_RESUMES.values(),
                         ids=MALFORMED_RESUMES.keys())
def test_malformed_resume_is_refused_with_a_message(market, changes, mentioned):
    # given
    stop(market)
    # when
    result = resume(market, **changes)
    # then: refused, still halted
    assert_control_result(result)
    assert result["success"] is False
    assert mentioned in result["message"]
    assert result["status"]["state"] == "HALTED"
