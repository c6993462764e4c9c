"""A repeated order id gets its first decision back; every decision reaches the audit
trail in PostgreSQL exactly once, even when the database was away while it was made.
"""

from __future__ import annotations

from decimal import Decimal

import orjson
import pytest

from risk_tasks.journal import is_outage
from risk_tasks.state import keys
from tests.integration.helpers import worker_id

pytestmark = pytest.mark.integration


@pytest.fixture()
def market(btc_market):  # noqa: ANN001, ANN201
    """``btc_market`` and B with 100."""
    btc_market.account("B", 100)
    btc_market.rt.drainer.drain()  # the arrangement's own journal records, out of the way
    return btc_market


def canonical(request: object) -> bytes:
    """A request as JSON with sorted keys (JSONB does not keep the key order)."""
    return orjson.dumps(request, option=orjson.OPT_SORT_KEYS)


# -- IDEMPOTENCY --

def test_retry_returns_the_first_approval_after_an_emergency_stop(market):
    # given: an approved order, then the platform halted
    order = market.order(quantity=2)
    first = market.check(order)
    assert first["approved"] is True
    stop = market.control("trigger_emergency_stop", reason="drill", triggered_by="ops")
    assert stop["success"] is True
    # when: the client retries, once as sent and once with a changed body
    retry = market.check(order)
    changed = market.check({**order, "quantity": 5000})
    fresh = market.check(market.order(quantity=2))
    # then
    assert retry == first
    assert changed == first
    assert fresh["rejection_reason"] == "emergency_stop_active"


def test_retry_returns_the_first_rejection_after_the_account_was_funded(market):
    # given: B cannot afford 20 BTC (needs 200, has 100)
    order = market.order(account_id="B", quantity=20)
    first = market.check(order)
    assert first["rejection_reason"] == "insufficient_margin"
    market.account("B", 1_000_000)
    # when
    retry = market.check(order)
    fresh = market.check(market.order(account_id="B", quantity=20))
    # then
    assert retry == first
    assert fresh["approved"] is True


def test_same_order_id_on_another_account_is_a_separate_decision(market):
    # given
    on_a = market.check(market.order(account_id="A", quantity=20, order_id="shared-1"))
    # when
    on_b = market.check(market.order(account_id="B", quantity=20, order_id="shared-1"))
    again_on_a = market.check(market.order(account_id="A", quantity=20, order_id="shared-1"))
    # then
    assert (on_a["approved"], on_a["account_id"]) == (True, "A")
    assert (on_b["approved"], on_b["rejection_reason"], on_b["account_id"]) == \
        (False, "insufficient_margin", "B")
    assert on_b["order_id"] == "shared-1"
    assert again_on_a == on_a


def test_batch_returns_decisions_in_order_and_a_duplicate_gets_the_first(market):
    # given
    orders = [
        market.order(account_id="A", quantity=1),
        {"order_id": "bad-1", "account_id": "A", "symbol": "BTC"},
        market.order(account_id="A", symbol="DOGE"),
        market.order(account_id="B", quantity=20),
        market.order(account_id="nobody"),
    ]
    duplicate = {**orders[0], "quantity": 3}  # same order id, another body
    batch = orders + [duplicate, market.order(account_id="A", quantity=4)]
    # when
    results = market.check_batch(batch)
    replayed = market.check_batch(batch)
    # then
    assert [r["order_id"] for r in results] == [o["order_id"] for o in batch]
    assert [r["rejection_reason"] for r in results] == [
        None, "invalid_request", "unknown_symbol", "insufficient_margin", "unknown_account",
        None, None]
    assert results[5] == results[0]
    assert results[0]["post_trade_metrics"]["notional"] == 100.0
    assert results[6]["post_trade_metrics"]["notional"] == 400.0
    decided = [i for i, r in enumerate(results) if r["rejection_reason"] != "invalid_request"]
    assert [replayed[i] for i in decided] == [results[i] for i in decided]


# -- AUDIT TRAIL --

def test_every_decision_is_drained_to_order_checks_exactly_once(market, session_worker):
    # given: approvals, rejections and invalid requests, single and batched
    singles = [
        market.order(quantity=1),
        market.order(quantity="0.5", price="101.5"),
        market.order(account_id="B", quantity=20),
        market.order(symbol="DOGE"),
        {"order_id": "bad-1", "account_id": "A", "symbol": "BTC", "side": "BUY",
         "quantity": -3, "order_type": "MARKET"},
        ["not", "an", "order"],
    ]
    batched = [market.order(quantity=2), market.order(account_id="nobody"),
               {"order_id": "bad-2", "order_type": "LIMIT"}]
    results = [market.check(o) for o in singles] + market.check_batch(batched)
    requests = singles + batched
    # when
    market.rt.drainer.drain()
    rows = market.order_check_rows()
    # then: one row per decision, with the request as received and the result
    assert len(rows) == len(requests)
    by_request = {canonical(r.request): r for r in rows}
    assert len(by_request) == len(rows)
    for request, result in zip(requests, results):
        row = by_request[canonical(request)]
        assert row.order_id == result["order_id"]
        assert row.account_id == result["account_id"]
        assert row.approved is result["approved"]
        assert row.rejection_reason == result["rejection_reason"]
        assert row.message == result["message"]
        assert row.violations == result["violations"]
        assert row.processing_time_us == result["processing_time_us"] > 0
        assert row.worker == worker_id(session_worker)
        assert row.checked_at is not None
    assert [r.approved for r in rows].count(True) == 3
    first = by_request[canonical(singles[1])]
    assert (first.symbol, first.side, first.order_type) == ("BTC", "BUY", "LIMIT")
    assert (first.quantity, first.price) == (Decimal("0.5"), Decimal("101.5"))
    assert first.post_trade_metrics == results[1]["post_trade_metrics"]
    assert market.rt.drainer.backlog()[keys.AUDIT_STREAM] == 0

    # when: replays of decided orders, and another drain
    replays = [market.check(o) for o in singles[:4]] + market.check_batch(batched[:2])
    market.rt.drainer.drain()
    # then: the same answers, and no new row
    assert replays == results[:4] + results[6:8]
    assert len(market.order_check_rows()) == len(requests)


def test_decisions_made_while_the_database_is_down_are_drained_when_it_returns(
        market, postgres_server):
    if postgres_server is None:
        pytest.skip("RISK_TEST_DATABASE_URL names a server this session does not own, "
                    "so the test cannot stop it")
    orders = [market.order(quantity=1), market.order(account_id="B", quantity=20),
              market.order(symbol="DOGE"), {"order_id": "bad-1"}]
    batch = [market.order(quantity=2), market.order(quantity=3)]
    # given: PostgreSQL is down
    postgres_server.stop()
    try:
        # when: checks keep coming (and one is a client's retry)
        results = [market.check(o) for o in orders] + market.check_batch(batch)
        retry = market.check(orders[0])
        # then: every check is answered, without the database
        assert [r["rejection_reason"] for r in results] == [
            None, "insufficient_margin", "unknown_symbol", "invalid_request", None, None]
        assert retry == results[0]
        # and the drain fails as an outage, leaving every record in Redis
        with pytest.raises(Exception) as failure:
            market.rt.drainer.drain()
        assert is_outage(failure.value), repr(failure.value)
        assert market.rt.drainer.backlog()[keys.AUDIT_STREAM] == len(results)
    finally:
        postgres_server.start_server()
    # when: the database is back
    market.rt.drainer.drain()
    market.rt.drainer.drain()
    # then: nothing lost, nothing doubled
    rows = market.order_check_rows()
    assert sorted(r.order_id or "" for r in rows) == \
        sorted(r["order_id"] or "" for r in results)
    assert len({r.journal_id for r in rows}) == len(rows) == len(results)
    assert market.rt.drainer.backlog()[keys.AUDIT_STREAM] == 0


def test_a_drain_lock_left_by_a_dead_drainer_holds_the_audit_trail_back_only_briefly(market):
    import time

    from risk_tasks.journal import Drainer

    # given: decisions waiting, and the audit stream's drain lock held by a drainer that
    # died (its worker killed, or Redis restarted under it: the key outlives it)
    results = [market.check(market.order(quantity=1)) for _ in range(3)]
    rt = market.rt
    drainer = Drainer(rt.redis, rt.sessions, lock_ttl=1)
    dead = rt.redis.lock(f"risk:drain-lock:{keys.AUDIT_STREAM}", timeout=drainer.lock_ttl)
    assert dead.acquire(blocking=False)
    # then: drains skip the stream while the lock lives
    assert drainer.drain(streams=[keys.AUDIT_STREAM])[keys.AUDIT_STREAM] == 0
    # and once its short lifetime is over, the next drain writes every decision
    time.sleep(1.2)
    assert drainer.drain(streams=[keys.AUDIT_STREAM])[keys.AUDIT_STREAM] >= len(results)
    written = {r.order_id for r in market.order_check_rows()}
    assert {r["order_id"] for r in results} <= written
