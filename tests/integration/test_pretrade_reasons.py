"""Every rejection reason of DESIGN.md, decided by a real worker through the broker.

Each test arranges the hot state, sends ``risk.check_order`` (or the batch task) to the
session worker and asserts the decision: ``approved``, ``rejection_reason`` and, where
DESIGN.md pins it, the message. The last tests pin the first-match order of the reasons.
"""

from __future__ import annotations

import struct
import time
from decimal import Decimal

import pytest

from risk_tasks.engine.model import TradingState
from risk_tasks.state import keys
from risk_tasks.state.codec import day_id
from tests.integration.helpers import D

pytestmark = pytest.mark.integration

BTC_COLLAR = Decimal("0.05")
BTC_MAX_NOTIONAL = Decimal("50000")
STALE_SECONDS = 30  # RISK_PRICE_STALE_SECONDS of the test session
RATE_LIMIT = 50  # RISK_RATE_LIMIT_PER_SECOND of the test session


@pytest.fixture()
def market(world, session_worker):  # noqa: ANN001, ANN201
    """BTC (10x, 5 % collar, 50 000 cap) and ETH (100x by margin) at 100, the default
    policies, and account A with 10 000."""
    world.default_policies()
    world.symbol("BTC", imr="0.10", mmr="0.05", collar=BTC_COLLAR, max_notional=BTC_MAX_NOTIONAL)
    world.symbol("ETH", imr="0.01", mmr="0.005")
    world.prices({"BTC": 100, "ETH": 100})
    world.account("A", 10_000)
    return world


def assert_rejected(result: dict, reason: str) -> None:
    assert result["approved"] is False, result
    assert result["rejection_reason"] == reason, result
    assert isinstance(result["message"], str) and result["message"], result
    assert result["message"] in result["violations"], result


def assert_approved(result: dict) -> None:
    assert result["approved"] is True, result
    assert result["rejection_reason"] is None, result


# -- INVALID REQUEST --

def _without(name: str):  # noqa: ANN202
    return lambda order: {k: v for k, v in order.items() if k != name}


def _with(**changes):  # noqa: ANN003, ANN202
    return lambda order: {**order, **changes}


# case: (build the request from a valid order, the field the message must name)
MALFORMED = {
    "a list": (lambda order: list(order.values()), "order"),
    "a string": (lambda order: "BUY 1 BTC", "order"),
    "null": (lambda order: None, "order"),
    "a number": (lambda order: 42, "order"),
    "missing symbol": (_without("symbol"), "symbol"),
    "missing order_id": (_without("order_id"), "order_id"),
    "missing quantity": (_without("quantity"), "quantity"),
    "negative quantity": (_with(quantity=-1), "quantity"),
    "zero quantity": (_with(quantity=0), "quantity"),
    "NaN quantity": (_with(quantity="NaN"), "quantity"),
    "infinite quantity": (_with(quantity="Infinity"), "quantity"),
    "boolean quantity": (_with(quantity=True), "quantity"),
    "text quantity": (_with(quantity="ten"), "quantity"),
    "unknown field": (_with(reduceOnly=True), "reduceOnly"),
    "bad side": (_with(side="HOLD"), "side"),
    "bad order type": (_with(order_type="STOP"), "order_type"),
    "LIMIT without price": (_with(order_type="LIMIT"), "price"),
    "LIMIT with zero price": (_with(order_type="LIMIT", price=0), "price"),
    "LIMIT with NaN price": (_with(order_type="LIMIT", price="NaN"), "price"),
    "MARKET with a price": (_with(price=100), "price"),
    "numeric account id": (_with(account_id=7), "account_id"),
}


@pytest.mark.parametrize("build, field", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_order_is_invalid_request_naming_the_field(market, build, field):
    # given
    request = build(market.order())
    # when
    result = market.check(request)
    # then
    assert_rejected(result, "invalid_request")
    assert field in result["message"]
    assert result["post_trade_metrics"] == {}
    if isinstance(request, dict) and "order_id" in request:
        assert result["order_id"] == request["order_id"]


def test_malformed_orders_never_stop_the_worker_from_answering(market):
    # given: a batch of shapes that are not orders, and a batch that is not a list
    junk = [None, [], "x", 1.5, {"": 1}, {"order_id": "o" * 500}, {"quantity": {"nested": 1}}]
    # when
    results = market.check_batch(junk)
    not_a_list = market.check_batch({"order_id": "o-1"})
    valid = market.check(market.order())
    # then
    assert [r["rejection_reason"] for r in results] == ["invalid_request"] * len(junk)
    assert [r["rejection_reason"] for r in not_a_list] == ["invalid_request"]
    assert_approved(valid)


# -- EMERGENCY STOP, ACCOUNT, TRADING STATE --

def test_global_emergency_stop_rejects_with_emergency_stop_active(market):
    # given
    stop = market.control("trigger_emergency_stop", reason="drill", triggered_by="ops")
    assert stop["success"] is True
    # when
    result = market.check(market.order())
    # then
    assert_rejected(result, "emergency_stop_active")


def test_unknown_account_is_rejected(market):
    result = market.check(market.order(account_id="nobody"))

    assert_rejected(result, "unknown_account")
    assert "nobody" in result["message"]


def test_halted_account_rejects_every_order_even_a_reducing_one(market):
    # given: a long position, then the account halted
    market.account("H", 10_000)
    market.fill("H", "BTC", "BUY", 10, 100)
    market.account_state("H", TradingState.HALTED)
    # when
    increasing = market.check(market.order(account_id="H", side="BUY"))
    reducing = market.check(market.order(account_id="H", side="SELL", quantity=5))
    # then
    assert_rejected(increasing, "account_halted")
    assert_rejected(reducing, "account_halted")


def test_account_created_halted_is_rejected(market):
    market.account("H2", 10_000, status="HALTED")

    assert_rejected(market.check(market.order(account_id="H2")), "account_halted")


def test_reducing_account_rejects_increase_and_lets_a_reduction_through(market):
    # given: long 10 BTC, account in REDUCING
    market.account("R", 10_000)
    market.fill("R", "BTC", "BUY", 10, 100)
    market.account_state("R", TradingState.REDUCING)
    # when
    increase = market.check(market.order(account_id="R", side="BUY", quantity=1))
    flip = market.check(market.order(account_id="R", side="SELL", quantity=15))
    reduce = market.check(market.order(account_id="R", side="SELL", quantity=5))
    close = market.check(market.order(account_id="R", side="SELL", quantity=10))
    # then
    assert_rejected(increase, "account_halted")
    assert_rejected(flip, "account_halted")  # through zero opens a short: not a reduction
    assert_approved(reduce)
    assert reduce["post_trade_metrics"]["notional"] == 500.0
    assert_approved(close)
    assert close["post_trade_metrics"]["open_positions"] == 0


def test_reducing_platform_rejects_increase_and_lets_a_reduction_through(market):
    # given: A is long 10 BTC; the platform only accepts reductions
    market.fill("A", "BTC", "BUY", 10, 100)
    market.platform_state(TradingState.REDUCING)
    # when
    increase = market.check(market.order(side="BUY", quantity=1))
    new_symbol = market.check(market.order(symbol="ETH", side="SELL", quantity=1))
    reduce = market.check(market.order(side="SELL", quantity=4))
    # then
    assert_rejected(increase, "account_halted")
    assert_rejected(new_symbol, "account_halted")
    assert_approved(reduce)
    assert reduce["post_trade_metrics"]["notional"] == 600.0


# -- SYMBOL AND PRICE --

def test_unconfigured_symbol_is_unknown_symbol(market):
    result = market.check(market.order(symbol="DOGE"))

    assert_rejected(result, "unknown_symbol")
    assert "DOGE" in result["message"]


def test_configured_symbol_without_a_price_is_no_price(market):
    market.symbol("SOL")

    result = market.check(market.order(symbol="SOL"))

    assert_rejected(result, "no_price")
    assert "SOL" in result["message"]


def test_price_older_than_the_staleness_limit_is_no_price(market):
    # given: XRP's only price is stamped twice the staleness limit ago, through ingest
    market.symbol("XRP")
    ingested = market.app.send_task(
        "risk.ingest_prices", [{"XRP": "0.5"}, time.time() - 2 * STALE_SECONDS]).get(timeout=20)
    assert ingested["ok"] is True and ingested["accepted"] == 1
    # when
    stale = market.check(market.order(symbol="XRP", quantity=10))
    market.prices({"XRP": "0.5"})  # a fresh tick
    fresh = market.check(market.order(symbol="XRP", quantity=10))
    # then
    assert_rejected(stale, "no_price")
    assert "XRP" in stale["message"]
    assert_approved(fresh)


def test_limit_price_outside_the_collar_is_price_collar(market):
    # given: mark 100, collar 5 %
    outside = market.order(price=106)
    at_the_edge = market.order(price=105)
    below = market.order(side="SELL", price="94.99")
    # when / then
    assert_rejected(market.check(outside), "price_collar")
    assert_rejected(market.check(below), "price_collar")
    assert_approved(market.check(at_the_edge))


def test_order_notional_above_the_symbol_cap_is_max_order_notional(market):
    # given: cap 50 000 at mark 100; A has margin for 1 000 BTC
    market.account("A", 1_000_000)
    too_big = market.order(quantity=501)
    at_cap = market.order(quantity=500)
    limit_above_mark = market.order(quantity=490, price=103)  # 50 470 at its limit price
    # when / then
    result = market.check(too_big)
    assert_rejected(result, "max_order_notional")
    assert "50100.00" in result["message"]
    assert_approved(market.check(at_cap))
    assert_rejected(market.check(limit_above_mark), "max_order_notional")


# -- RATE, MARGIN, POLICY --

def test_orders_beyond_the_per_account_rate_are_rate_limited(market):
    # given: 60 orders for one account in one batch, well within one second
    market.account("FAST", 1_000_000)
    orders = [market.order(account_id="FAST") for _ in range(60)]
    # when
    results = market.check_batch(orders)
    # then: the sliding window lets exactly RATE_LIMIT through, in arrival order
    reasons = [r["rejection_reason"] for r in results]
    assert reasons == [None] * RATE_LIMIT + ["rate_limited"] * (60 - RATE_LIMIT)
    assert [r["order_id"] for r in results] == [o["order_id"] for o in orders]
    # and another account is not affected
    assert_approved(market.check(market.order(account_id="A")))


def test_insufficient_margin_states_need_and_available(market):
    # given: balance 1 000, long 30 BTC from 90, mark 100; a LIMIT buy of 150 at 101
    market.account("M", 1_000)
    market.fill("M", "BTC", "BUY", 30, 90)
    balance, held, entry, mark, imr = D(1000), D(30), D(90), D(100), D("0.10")
    quantity, limit = D(150), D(101)
    equity = balance + held * (mark - entry)
    available = equity - held * mark * imr
    need = quantity * limit * imr
    # when
    result = market.check(market.order(account_id="M", quantity=150, price=101))
    # then
    assert_rejected(result, "insufficient_margin")
    assert result["message"] == f"insufficient margin: need {need:.2f}, available {available:.2f}"
    assert result["message"] == "insufficient margin: need 1515.00, available 1000.00"
    post_qty = held + quantity
    post_entry = (held * entry + quantity * limit) / post_qty
    post_available = balance + post_qty * (mark - post_entry) - post_qty * mark * imr
    assert result["post_trade_metrics"]["available_margin"] == pytest.approx(float(post_available))


def test_order_that_fits_the_margin_exactly_is_approved(market):
    # given: 1 000 of equity covers 100 BTC at 10 % margin, no more
    market.account("EXACT", 1_000)
    # when
    fits = market.check(market.order(account_id="EXACT", quantity=100))
    over = market.check(market.order(account_id="EXACT", quantity="100.01"))
    # then
    assert_approved(fits)
    assert fits["post_trade_metrics"]["available_margin"] == 0.0
    assert_rejected(over, "insufficient_margin")
    assert over["message"] == "insufficient margin: need 1000.10, available 1000.00"


def test_leverage_above_ten_is_a_hard_policy_violation(market):
    # given: ETH needs 1 % margin, so margin allows 100x but the default policy caps 10x
    market.account("L", 1_000)
    # when
    at_limit = market.check(market.order(account_id="L", symbol="ETH", quantity=100))
    over = market.check(market.order(account_id="L", symbol="ETH", quantity=200))
    # then
    assert_approved(at_limit)
    assert at_limit["post_trade_metrics"]["leverage"] == 10.0
    assert_rejected(over, "policy_violation")
    assert over["message"].startswith("Max Account Leverage")
    assert over["message"] in over["violations"]
    assert over["post_trade_metrics"]["leverage"] == 20.0


def test_emergency_policy_blocks_an_order_that_adds_exposure(market):
    # given: equity 1 000 against a peak of 1 400: drawdown 28.6 %, past the 25 %
    # emergency policy and the 20 % hard one; long 1 BTC
    market.account("DD", 1_000, peak_equity=1_400)
    market.fill("DD", "BTC", "BUY", 1, 100)
    # when
    adding = market.check(market.order(account_id="DD", quantity=1))
    reducing = market.check(market.order(account_id="DD", side="SELL", quantity=1))
    # then: the emergency policy (highest priority) is the reason given
    assert_rejected(adding, "policy_violation")
    assert adding["message"].startswith("Emergency Drawdown Stop (emergency)")
    names = [v.split(" (")[0] for v in adding["violations"]]
    assert names[:2] == ["Emergency Drawdown Stop", "Max Drawdown Hard Limit"]
    # and an order that only reduces is never refused for policy reasons
    assert_approved(reducing)
    assert any(v.startswith("Emergency Drawdown Stop") for v in reducing["violations"])


def test_soft_policy_violation_is_approved_with_the_warning_listed(market):
    # given: equity 1 000 against a day start of 1 200: daily drawdown 16.7 % > 10 %
    market.account("SOFT", 1_000, daily_start_equity=1_200)
    # when
    result = market.check(market.order(account_id="SOFT", quantity=1))
    # then
    assert_approved(result)
    assert result["message"] is None
    assert len(result["violations"]) == 1
    assert result["violations"][0].startswith("Daily Drawdown Warning (soft)")
    assert result["post_trade_metrics"]["drawdown_daily"] == pytest.approx(1 / 6)


def test_a_check_reads_the_peak_and_day_start_the_monitor_keeps_in_its_slots(market):
    # given: equity 1 000, stored peak and day start 1 000; the monitor's slots of the
    # account's shard say peak 1 400 and, for today, day start 1 200
    market.account("MON", 1_000)
    redis = market.rt.redis
    shard, slot = (int(v) for v in redis.hmget(keys.account("MON"), "shard", "slot"))
    redis.setrange(keys.shard_hwm(shard), slot * 8, struct.pack("<d", 1_400.0))
    redis.setrange(keys.shard_day(shard), slot * 8, struct.pack("<d", 1_200.0))
    redis.set(keys.shard_dayid(shard), day_id(time.time()))
    # when
    result = market.check(market.order(account_id="MON", quantity=1))
    # then: drawdowns from the monitor's figures (28.6 % from the peak: the emergency stop)
    assert_rejected(result, "policy_violation")
    assert result["message"].startswith("Emergency Drawdown Stop")
    assert result["post_trade_metrics"]["drawdown_max"] == pytest.approx(400 / 1_400)
    assert result["post_trade_metrics"]["drawdown_daily"] == pytest.approx(200 / 1_200)
    # and a day start the monitor set on another day is not today's
    redis.set(keys.shard_dayid(shard), "19700101")
    redis.setrange(keys.shard_hwm(shard), slot * 8, struct.pack("<d", 1_000.0))
    later = market.check(market.order(account_id="MON", quantity=1))
    assert_approved(later)
    assert later["post_trade_metrics"]["drawdown_daily"] == 0.0


# -- FIRST MATCH WINS --

def _stop(world):  # noqa: ANN001, ANN202
    world.control("trigger_emergency_stop", reason="drill", triggered_by="ops")


def _halt_b(world):  # noqa: ANN001, ANN202
    world.account("B", 10_000, status="HALTED")


def _stale_btc(world):  # noqa: ANN001, ANN202
    world.rt.redis.hdel(keys.PRICES, "BTC")
    world.prices({"BTC": 100}, ts=time.time() - 2 * STALE_SECONDS)


def _poor_b(world):  # noqa: ANN001, ANN202
    world.account("B", 10)


FIRST_MATCH = {
    "invalid before emergency stop": (
        _stop, {"quantity": -1}, "invalid_request"),
    "emergency stop before unknown account": (
        _stop, {"account_id": "nobody"}, "emergency_stop_active"),
    "unknown account before unknown symbol": (
        None, {"account_id": "nobody", "symbol": "DOGE"}, "unknown_account"),
    "halted account before unknown symbol": (
        _halt_b, {"account_id": "B", "symbol": "DOGE"}, "account_halted"),
    "unknown symbol before no price": (
        None, {"symbol": "DOGE"}, "unknown_symbol"),
    "no price before price collar": (
        _stale_btc, {"order_type": "LIMIT", "price": 200}, "no_price"),
    "price collar before max order notional": (
        None, {"quantity": 1000, "order_type": "LIMIT", "price": 120}, "price_collar"),
    "max order notional before insufficient margin": (
        _poor_b, {"account_id": "B", "quantity": 600}, "max_order_notional"),
    "insufficient margin before policy violation": (
        _poor_b, {"account_id": "B", "symbol": "ETH", "quantity": 50}, "insufficient_margin"),
}


@pytest.mark.parametrize("arrange, changes, reason", FIRST_MATCH.values(), ids=FIRST_MATCH.keys())
def test_when_two_reasons_apply_the_earlier_one_is_returned(market, arrange, changes, reason):
    # given
    if arrange is not None:
        arrange(market)
    order = {**market.order(), **changes}
    # when
    result = market.check(order)
    # then
    assert_rejected(result, reason)


def test_rate_limited_comes_before_insufficient_margin(market):
    # given: a full window of affordable orders, then one the account cannot afford
    market.account("RM", 1_000)
    orders = [market.order(account_id="RM", quantity="0.01") for _ in range(RATE_LIMIT)]
    orders.append(market.order(account_id="RM", quantity=200))  # needs 2 000 of margin
    # when
    results = market.check_batch(orders)
    # then
    assert all(r["approved"] for r in results[:RATE_LIMIT])
    assert_rejected(results[-1], "rate_limited")


def test_a_mixed_batch_decides_each_order_as_a_single_check_does(market):
    # given: accounts holding different symbols, a symbol without a price, an unknown
    # account and a halted one, in one batch (one invocation of the read script, which
    # reads the platform state, the clock and each mark once for the whole batch)
    market.symbol("SOL", imr="0.20", mmr="0.10")  # never priced
    market.symbol("XRP", imr="0.10", mmr="0.05")
    market.prices({"XRP": 2})
    market.account("M1", 50_000)
    market.fill("M1", "ETH", "BUY", 10, 100)
    market.account("M2", 1_000)
    market.fill("M2", "XRP", "SELL", 100, 2)
    market.account("M3", 5_000)
    market.account_state("M3", TradingState.HALTED)
    market.account("M4", 100)
    shapes = [
        (dict(account_id="M1", symbol="BTC", quantity=2), None),
        (dict(account_id="M1", symbol="SOL", quantity=1), "no_price"),
        (dict(account_id="M2", symbol="XRP", quantity=50), None),  # reduces the short
        (dict(account_id="nobody"), "unknown_account"),
        (dict(account_id="M3"), "account_halted"),
        (dict(account_id="M4", quantity=50), "insufficient_margin"),
        (dict(account_id="M2", symbol="BTC", quantity=1), None),
        (dict(account_id="M4", symbol="SOL", quantity=1), "no_price"),
        (dict(account_id="M1", symbol="ETH", side="SELL", quantity=10), None),  # closes
    ]
    # when: the batch, then each order again (new ids) as a single check
    batched = market.check_batch([market.order(**shape) for shape, _ in shapes])
    singles = [market.check(market.order(**shape)) for shape, _ in shapes]
    # then: the reasons expected, and the same decisions and figures both ways
    assert [r["rejection_reason"] for r in batched] == [reason for _, reason in shapes]

    def same(result: dict) -> dict:
        return {k: v for k, v in result.items() if k not in ("order_id", "processing_time_us")}

    assert [same(r) for r in batched] == [same(r) for r in singles]
    assert batched[0]["post_trade_metrics"]["concentration"].keys() == {"ETH", "BTC"}
    assert batched[8]["post_trade_metrics"]["open_positions"] == 0
