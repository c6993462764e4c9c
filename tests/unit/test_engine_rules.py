"""Example tests of the engine's rules (DESIGN.md "Public contract", "Formulas", "Policies").

Each test builds the smallest context that shows one rule and is named for the outcome.
The pipeline under test is ``validate_order`` then ``decide`` (tests/unit/builders.check),
as the ``risk.check_order`` task runs it.
"""

from __future__ import annotations

import pytest

from risk_tasks.engine.liquidation import plan_liquidation
from risk_tasks.engine.metrics import compute_metrics, is_liquidatable, liquidation_price
from risk_tasks.engine.model import ENGINE_CONTEXT, PolicyType, Position, Reason, TradingState
from risk_tasks.engine.policies import DEFAULT_POLICIES, evaluate, order_policies
from risk_tasks.engine.positions import apply_fill
from risk_tasks.engine.pretrade import decide
from tests.unit.builders import (
    NOW, D, account, check, context, order, policy, position, spec, violation_names,
)


def div(a, b):
    """A quotient as the engine takes it: under its 80-digit context."""
    return ENGINE_CONTEXT.divide(a, b)

ACTIVE, REDUCING, HALTED = TradingState.ACTIVE, TradingState.REDUCING, TradingState.HALTED


def raw_order(**fields) -> dict:
    base = {"order_id": "ord-1", "account_id": "acct-1", "symbol": "BTC", "side": "BUY",
            "quantity": "1", "order_type": "MARKET"}
    base.update(fields)
    return base


def long_btc(quantity: str = "10", entry: str = "100") -> Position:
    return position("BTC", quantity, entry)


# -- REJECTION REASONS, ONE BY ONE --


def test_malformed_order_is_rejected_with_invalid_request() -> None:
    # given
    ctx = context(account())
    # when
    decision = check(raw_order(quantity="-1"), ctx)
    # then
    assert decision.approved is False
    assert decision.reason is Reason.INVALID_REQUEST
    assert "quantity" in decision.message


def test_any_order_is_rejected_with_emergency_stop_active_when_the_platform_is_halted() -> None:
    # given: even an order that only closes a position
    ctx = context(account(positions=[long_btc()]), platform=HALTED)
    # when
    decision = decide(order("SELL", 10), ctx)
    # then
    assert decision.approved is False
    assert decision.reason is Reason.EMERGENCY_STOP_ACTIVE


def test_order_of_an_unknown_account_is_rejected_with_unknown_account() -> None:
    decision = decide(order(), context(None))
    assert decision.reason is Reason.UNKNOWN_ACCOUNT
    assert decision.approved is False


def test_any_order_of_a_halted_account_is_rejected_with_account_halted() -> None:
    # given
    ctx = context(account(positions=[long_btc()], status=HALTED))
    # when
    increasing = decide(order("BUY", 1), ctx)
    closing = decide(order("SELL", 10), ctx)
    # then
    assert increasing.reason is Reason.ACCOUNT_HALTED
    assert closing.reason is Reason.ACCOUNT_HALTED


def test_order_of_an_unconfigured_symbol_is_rejected_with_unknown_symbol() -> None:
    ctx = context(account(), marks={"BTC": 100, "DOGE": 1})
    decision = decide(order(symbol="DOGE"), ctx)
    assert decision.reason is Reason.UNKNOWN_SYMBOL


def test_increasing_order_is_rejected_with_unknown_symbol_when_a_held_symbol_is_not_configured(
) -> None:
    # given: the account holds DOGE, which has no spec any more
    ctx = context(account(positions=[position("DOGE", 100, 1)]), marks={"BTC": 100, "DOGE": 1})
    # when
    decision = decide(order("BUY", 1), ctx)
    # then
    assert decision.reason is Reason.UNKNOWN_SYMBOL
    assert "DOGE" in decision.message


def test_order_without_a_mark_price_is_rejected_with_no_price() -> None:
    ctx = context(account(), marks={})
    decision = decide(order(), ctx)
    assert decision.reason is Reason.NO_PRICE


def test_limit_price_beyond_the_collar_is_rejected_with_price_collar() -> None:
    ctx = context(account(), specs=[spec(collar="0.05")])
    decision = decide(order(price="106"), ctx)
    assert decision.reason is Reason.PRICE_COLLAR


def test_order_above_max_order_notional_is_rejected_with_max_order_notional() -> None:
    ctx = context(account(), specs=[spec(max_notional="1000")])
    decision = decide(order(quantity=11), ctx)  # 11 * 100 = 1100
    assert decision.reason is Reason.MAX_ORDER_NOTIONAL


def test_order_over_the_rate_limit_is_rejected_with_rate_limited() -> None:
    ctx = context(account(), recent_orders=11, rate_limit=10)
    decision = decide(order(), ctx)
    assert decision.reason is Reason.RATE_LIMITED


def test_order_beyond_available_margin_is_rejected_with_insufficient_margin() -> None:
    ctx = context(account(balance=5))
    decision = decide(order("BUY", 1), ctx)  # needs 10
    assert decision.reason is Reason.INSUFFICIENT_MARGIN
    assert decision.metrics is not None and decision.metrics.available_margin == D(-5)


def test_order_breaking_a_hard_policy_is_rejected_with_policy_violation() -> None:
    # given: 5 % initial margin, so margin allows 20x but the default policy caps 10x
    ctx = context(account(balance=1000), specs=[spec(imr="0.05", mmr="0.025")],
                  policies=DEFAULT_POLICIES)
    decision = decide(order("BUY", 101), ctx)  # leverage 10100 / 1000 = 10.1
    assert decision.reason is Reason.POLICY_VIOLATION
    assert decision.message.startswith("Max Account Leverage (hard): leverage=10.1")


# -- THE MARGIN RULE --


def test_insufficient_margin_message_states_need_and_available_as_in_design() -> None:
    # given: 90 000 of equity, 50 BTC at 100 000 with a 10 % initial margin
    ctx = context(account(balance=90_000), marks={"BTC": 100_000}, specs=[spec(imr="0.10")])
    # when
    decision = check(raw_order(quantity=50), ctx)
    # then
    assert decision.reason is Reason.INSUFFICIENT_MARGIN
    assert decision.message == "insufficient margin: need 500000.00, available 90000.00"


def test_order_that_leaves_exactly_zero_available_margin_is_approved() -> None:
    # given: 10 of equity, an order needing 10 of margin (leverage 10, margin ratio 1)
    ctx = context(account(balance=10), policies=DEFAULT_POLICIES)
    # when
    decision = decide(order("BUY", 1), ctx)
    # then
    assert decision.approved is True
    assert decision.metrics.available_margin == 0
    assert decision.violations == ()


def test_order_that_leaves_one_cent_of_negative_available_margin_is_rejected() -> None:
    ctx = context(account(balance="9.99"), policies=DEFAULT_POLICIES)
    decision = decide(order("BUY", 1), ctx)
    assert decision.reason is Reason.INSUFFICIENT_MARGIN
    assert decision.message == "insufficient margin: need 10.00, available 9.99"


def test_limit_order_is_simulated_at_its_limit_price_and_marked_at_mark() -> None:
    # given: a buy at 104 while the mark is 100
    ctx = context(account(balance=1000), specs=[spec(collar="0.05")])
    # when
    decision = decide(order("BUY", 2, price=104), ctx)
    # then: entry 104, marked at 100: 8 of unrealised loss, notional at mark
    assert decision.approved is True
    assert decision.metrics.unrealized_pnl == D(-8)
    assert decision.metrics.notional == D(200)
    assert decision.metrics.equity == D(992)


def test_order_that_closes_position_is_approved_even_with_negative_equity() -> None:
    # given: long 10 at 100 marked at 50, balance 100: equity -400, every hard policy broken
    acct = account(balance=100, positions=[long_btc()], peak_equity=1000)
    ctx = context(acct, marks={"BTC": 50}, policies=order_policies(DEFAULT_POLICIES))
    # when
    decision = decide(order("SELL", 10), ctx)
    # then
    assert decision.approved is True
    assert decision.reason is None
    assert decision.metrics.open_positions == 0
    assert decision.metrics.equity == D(-400)
    assert decision.metrics.balance == D(-400)  # the loss is realised into the balance


def test_order_that_reduces_position_is_approved_while_hard_policies_are_violated() -> None:
    # given: long 10 at 100 marked at 95 with balance 60: equity 10, leverage 95
    acct = account(balance=60, positions=[long_btc("10", "100")], max_leverage=2)
    ctx = context(acct, marks={"BTC": 95}, policies=order_policies(DEFAULT_POLICIES))
    # when
    decision = decide(order("SELL", 5), ctx)
    # then: approved (leverage 47.5, margin ratio 0.21), the violations still reported
    assert decision.approved is True
    assert violation_names(decision) == {
        "Max Account Leverage", "Min Margin Ratio", "Account Max Leverage"}


def test_increasing_order_with_negative_equity_is_rejected_for_margin() -> None:
    acct = account(balance=100, positions=[long_btc()])
    ctx = context(acct, marks={"BTC": 50})
    decision = decide(order("BUY", 1), ctx)
    assert decision.reason is Reason.INSUFFICIENT_MARGIN


def test_flip_through_zero_that_makes_the_position_smaller_is_never_refused_for_margin() -> None:
    # given: long 10 with almost no equity left
    acct = account(balance=1, positions=[long_btc()])
    ctx = context(acct, policies=DEFAULT_POLICIES)
    # when: sell 15, ending short 5 (|q| falls, so margin_used falls)
    decision = decide(order("SELL", 15), ctx)
    # then
    assert decision.approved is True
    assert decision.metrics.margin_used == D(50)


def test_flip_through_zero_that_makes_the_position_larger_needs_margin() -> None:
    acct = account(balance=1, positions=[long_btc()])
    decision = decide(order("SELL", 25), context(acct))  # short 15
    assert decision.reason is Reason.INSUFFICIENT_MARGIN


# -- TRADING STATES --


@pytest.mark.parametrize("where", ["account", "platform"])
def test_increasing_order_is_rejected_with_account_halted_when_reducing(where: str) -> None:
    # given
    status = REDUCING if where == "account" else ACTIVE
    platform = REDUCING if where == "platform" else ACTIVE
    ctx = context(account(positions=[long_btc()], status=status), platform=platform)
    # when
    decision = decide(order("BUY", 1), ctx)
    # then
    assert decision.reason is Reason.ACCOUNT_HALTED


@pytest.mark.parametrize("where", ["account", "platform"])
@pytest.mark.parametrize("quantity", ["1", "10"])
def test_reducing_or_closing_order_is_approved_when_reducing(where: str, quantity: str) -> None:
    status = REDUCING if where == "account" else ACTIVE
    platform = REDUCING if where == "platform" else ACTIVE
    ctx = context(account(positions=[long_btc()], status=status), platform=platform)
    decision = decide(order("SELL", quantity), ctx)
    assert decision.approved is True


@pytest.mark.parametrize("where", ["account", "platform"])
def test_opening_order_without_a_position_is_rejected_when_reducing(where: str) -> None:
    status = REDUCING if where == "account" else ACTIVE
    platform = REDUCING if where == "platform" else ACTIVE
    decision = decide(order("SELL", 1), context(account(status=status), platform=platform))
    assert decision.reason is Reason.ACCOUNT_HALTED


@pytest.mark.parametrize("where", ["account", "platform"])
def test_flip_through_zero_is_rejected_when_reducing(where: str) -> None:
    # engine choice (positions.reduces_exposure): a side change opens new exposure
    status = REDUCING if where == "account" else ACTIVE
    platform = REDUCING if where == "platform" else ACTIVE
    ctx = context(account(positions=[long_btc()], status=status), platform=platform)
    decision = decide(order("SELL", 15), ctx)
    assert decision.reason is Reason.ACCOUNT_HALTED


def test_halted_platform_wins_over_a_halted_account() -> None:
    ctx = context(account(status=HALTED), platform=HALTED)
    assert decide(order(), ctx).reason is Reason.EMERGENCY_STOP_ACTIVE


# -- REDUCE ONLY --


def test_reduce_only_order_larger_than_the_position_only_closes_it() -> None:
    # given: long 10, a reduce-only sell of 25
    ctx = context(account(positions=[long_btc()]))
    # when
    decision = decide(order("SELL", 25, reduce_only=True), ctx)
    # then: flat, not short 15
    assert decision.approved is True
    assert decision.metrics.open_positions == 0
    assert decision.metrics.notional == 0


def test_reduce_only_order_smaller_than_the_position_reduces_it() -> None:
    ctx = context(account(positions=[long_btc()]))
    decision = decide(order("SELL", 4, reduce_only=True), ctx)
    assert decision.approved is True
    assert decision.metrics.notional == D(600)


def test_reduce_only_order_passes_on_a_reducing_account() -> None:
    ctx = context(account(positions=[long_btc()], status=REDUCING))
    decision = decide(order("SELL", 25, reduce_only=True), ctx)
    assert decision.approved is True


@pytest.mark.parametrize("positions, side", [([], "SELL"), ([long_btc()], "BUY")])
def test_reduce_only_order_without_an_opposite_position_is_rejected_as_invalid_request(
    positions: list, side: str,
) -> None:
    ctx = context(account(positions=positions))
    decision = decide(order(side, 1, reduce_only=True), ctx)
    assert decision.reason is Reason.INVALID_REQUEST


# -- PRICES --


def test_mark_exactly_as_old_as_the_staleness_is_fresh() -> None:
    ctx = context(account(), mark_ts={"BTC": NOW - 5.0}, stale_seconds=5.0)
    assert decide(order(), ctx).approved is True


def test_mark_just_older_than_the_staleness_is_no_price() -> None:
    ctx = context(account(), mark_ts={"BTC": NOW - 5.001}, stale_seconds=5.0)
    decision = decide(order(), ctx)
    assert decision.reason is Reason.NO_PRICE
    assert "BTC" in decision.message


def test_increasing_order_is_rejected_with_no_price_when_a_held_symbol_is_stale() -> None:
    # given: ETH is held and its mark is a minute old
    acct = account(positions=[position("ETH", 1, 10)])
    ctx = context(acct, marks={"BTC": 100, "ETH": 10}, specs=[spec("BTC"), spec("ETH")],
                  mark_ts={"ETH": NOW - 60})
    # when
    decision = decide(order("BUY", 1), ctx)
    # then
    assert decision.reason is Reason.NO_PRICE
    assert "ETH" in decision.message


def test_reducing_order_is_approved_when_another_held_symbol_is_stale() -> None:
    acct = account(positions=[long_btc(), position("ETH", 1, 10)])
    ctx = context(acct, marks={"BTC": 100, "ETH": 10}, specs=[spec("BTC"), spec("ETH")],
                  mark_ts={"ETH": NOW - 60})
    assert decide(order("SELL", 1), ctx).approved is True


@pytest.mark.parametrize("price", ["105", "95"])
def test_limit_price_exactly_at_the_collar_passes(price: str) -> None:
    ctx = context(account(), specs=[spec(collar="0.05")])
    assert decide(order(price=price), ctx).approved is True


@pytest.mark.parametrize("price", ["105.01", "94.99"])
def test_limit_price_just_beyond_the_collar_is_rejected(price: str) -> None:
    ctx = context(account(), specs=[spec(collar="0.05")])
    assert decide(order(price=price), ctx).reason is Reason.PRICE_COLLAR


def test_market_order_is_not_subject_to_the_collar() -> None:
    ctx = context(account(), specs=[spec(collar="0.0001")])
    assert decide(order(), ctx).approved is True


def test_limit_price_anywhere_passes_without_a_collar() -> None:
    ctx = context(account(balance=10**6), specs=[spec(collar=None)])
    assert decide(order(price="1000"), ctx).approved is True


# -- ORDER SIZE AND RATE --


def test_order_notional_exactly_at_max_order_notional_passes() -> None:
    ctx = context(account(), specs=[spec(max_notional="1000")])
    assert decide(order(quantity=10), ctx).approved is True  # 10 * 100


def test_order_notional_one_cent_above_max_order_notional_is_rejected() -> None:
    ctx = context(account(), specs=[spec(max_notional="1000")])
    decision = decide(order(quantity="10.0001"), ctx)  # 1000.01
    assert decision.reason is Reason.MAX_ORDER_NOTIONAL


def test_max_order_notional_of_a_limit_order_uses_its_limit_price() -> None:
    ctx = context(account(), specs=[spec(max_notional="1000", collar="0.05")])
    assert decide(order(quantity=10, price="100.01"), ctx).reason is Reason.MAX_ORDER_NOTIONAL
    assert decide(order(quantity=10, price="99.99"), ctx).approved is True


def test_max_order_notional_applies_to_reducing_orders_too() -> None:
    ctx = context(account(positions=[long_btc("100")]), specs=[spec(max_notional="1000")])
    assert decide(order("SELL", 20), ctx).reason is Reason.MAX_ORDER_NOTIONAL


def test_recent_orders_equal_to_the_rate_limit_pass() -> None:
    ctx = context(account(), recent_orders=10, rate_limit=10)
    assert decide(order(), ctx).approved is True


def test_recent_orders_one_above_the_rate_limit_are_rate_limited() -> None:
    ctx = context(account(), recent_orders=11, rate_limit=10)
    decision = decide(order(), ctx)
    assert decision.reason is Reason.RATE_LIMITED


# -- POLICIES --


def test_the_five_default_policies_are_as_design_pins_them() -> None:
    got = {p.name: (p.type, p.metric, p.operator, p.threshold, p.scope, p.scope_id, p.enabled)
           for p in DEFAULT_POLICIES}
    assert got == {
        "Max Account Leverage": (PolicyType.HARD, "leverage", "less_than_or_equal", D(10),
                                 "account", None, True),
        "Min Margin Ratio": (PolicyType.HARD, "margin_ratio", "greater_than_or_equal",
                             D("1.0"), "account", None, True),
        "Daily Drawdown Warning": (PolicyType.SOFT, "drawdown_daily", "less_than_or_equal",
                                   D("0.10"), "account", None, True),
        "Max Drawdown Hard Limit": (PolicyType.HARD, "drawdown_max", "less_than_or_equal",
                                    D("0.20"), "account", None, True),
        "Emergency Drawdown Stop": (PolicyType.EMERGENCY, "drawdown_max", "less_than_or_equal",
                                    D("0.25"), "account", None, True),
    }


def test_soft_policy_violation_is_listed_but_the_order_is_approved() -> None:
    # given: 15 % below the day's start (Daily Drawdown Warning is soft)
    ctx = context(account(balance=850, daily_start_equity=1000), policies=DEFAULT_POLICIES)
    # when
    decision = decide(order("BUY", 1), ctx)
    # then
    assert decision.approved is True
    assert decision.reason is None
    assert violation_names(decision) == {"Daily Drawdown Warning"}
    assert decision.violations[0] == (
        "Daily Drawdown Warning (soft): drawdown_daily=0.15 violates less_than_or_equal 0.1")


def test_hard_policy_violation_blocks_the_order() -> None:
    # given: 22 % below peak, past the hard 20 % but not the emergency 25 %
    ctx = context(account(balance=780, peak_equity=1000), policies=DEFAULT_POLICIES)
    decision = decide(order("BUY", 1), ctx)
    assert decision.reason is Reason.POLICY_VIOLATION
    assert violation_names(decision) == {"Max Drawdown Hard Limit"}


def test_emergency_policy_violation_blocks_and_leads_the_message_by_priority() -> None:
    # given: 30 % below peak breaks both the hard and the emergency drawdown policies
    ctx = context(account(balance=700, peak_equity=1000),
                  policies=order_policies(DEFAULT_POLICIES))
    # when
    decision = decide(order("BUY", 1), ctx)
    # then
    assert decision.reason is Reason.POLICY_VIOLATION
    assert decision.message.startswith("Emergency Drawdown Stop (emergency): drawdown_max=0.3")
    assert violation_names(decision) == {"Emergency Drawdown Stop", "Max Drawdown Hard Limit"}


def test_account_max_leverage_acts_as_a_hard_policy() -> None:
    # given: no policies at all, but the account caps its leverage at 2
    ctx = context(account(balance=1000, max_leverage=2))
    # when
    at_cap = decide(order("BUY", 20), ctx)  # 2000 / 1000 = 2
    beyond = decide(order("BUY", "20.01"), ctx)
    # then
    assert at_cap.approved is True
    assert beyond.reason is Reason.POLICY_VIOLATION
    assert beyond.message.startswith("Account Max Leverage (hard): leverage=2.001")


def test_disabled_policy_is_ignored() -> None:
    always = policy("Never Trade", "drawdown_max", "less_than", 0, enabled=False)
    assert decide(order(), context(account(), policies=[always])).approved is True


@pytest.mark.parametrize("scope_id, applies", [
    (None, True), ("*", True), ("acct-1", True), ("acct-2", False),
])
def test_account_scoped_policy_applies_to_every_account_or_the_named_one(
    scope_id: str | None, applies: bool,
) -> None:
    always = policy("Never Trade", "drawdown_max", "less_than", 0, scope="account",
                    scope_id=scope_id)
    decision = decide(order(), context(account(), policies=[always]))
    assert decision.approved is (not applies)


def test_symbol_scoped_policy_applies_only_to_accounts_holding_the_symbol() -> None:
    # given: a concentration cap on ETH
    cap = policy("ETH cap", "concentration_ETH", "less_than", "0.5", scope="symbol",
                 scope_id="ETH")
    specs = [spec("BTC"), spec("ETH")]
    marks = {"BTC": 100, "ETH": 100}
    # when: buying a lot of BTC and a lot of ETH
    btc = decide(order("BUY", 6, symbol="BTC"), context(account(balance=1000), marks=marks,
                                                         specs=specs, policies=[cap]))
    eth = decide(order("BUY", 6, symbol="ETH"), context(account(balance=1000), marks=marks,
                                                         specs=specs, policies=[cap]))
    # then: only the ETH order is capped (600 / 1000 = 0.6)
    assert btc.approved is True
    assert eth.reason is Reason.POLICY_VIOLATION


def test_symbol_scoped_policy_applies_when_another_order_leaves_the_symbol_held() -> None:
    cap = policy("ETH cap", "concentration_ETH", "less_than", "0.5", scope="symbol",
                 scope_id="ETH")
    acct = account(balance=1000, positions=[position("ETH", 6, 100)])
    ctx = context(acct, marks={"BTC": 100, "ETH": 100}, specs=[spec("BTC"), spec("ETH")],
                  policies=[cap])
    assert decide(order("BUY", 1, symbol="BTC"), ctx).reason is Reason.POLICY_VIOLATION


def test_strategy_scoped_policy_applies_only_to_orders_of_that_strategy() -> None:
    never = policy("No alpha", "drawdown_max", "less_than", 0, scope="strategy",
                   scope_id="alpha")
    ctx = context(account(), policies=[never])
    assert decide(order(strategy_id="alpha"), ctx).reason is Reason.POLICY_VIOLATION
    assert decide(order(strategy_id="beta"), ctx).approved is True
    assert decide(order(), ctx).approved is True


def test_policies_are_ordered_by_priority_then_name_and_disabled_ones_dropped() -> None:
    a = policy("a", "leverage", "less_than", 1, priority=1)
    b = policy("b", "leverage", "less_than", 1, priority=5)
    c = policy("c", "leverage", "less_than", 1, priority=1)
    off = policy("off", "leverage", "less_than", 1, priority=9, enabled=False)
    assert [p.name for p in order_policies([a, off, c, b])] == ["b", "a", "c"]


# -- UNDEFINED METRICS (policies.py docstring) --


def metrics_of(balance, positions=(), marks=None):  # noqa: ANN001, ANN201
    marks = {"BTC": D(100)} if marks is None else {s: D(m) for s, m in marks.items()}
    return compute_metrics(D(balance), {p.symbol: p for p in positions}, marks,
                           {"BTC": spec("BTC"), "ETH": spec("ETH")}, D(0), D(0))


def test_margin_ratio_without_margin_is_read_as_infinite() -> None:
    # given: no positions, so no margin used and margin_ratio is undefined
    m = metrics_of(1000)
    assert m.margin_ratio is None
    # then: a floor holds, a ceiling is violated
    floor = policy("floor", "margin_ratio", "greater_than_or_equal", 1)
    ceiling = policy("ceiling", "margin_ratio", "less_than", 5)
    violations = evaluate(m, [floor, ceiling], "acct-1")
    assert [v.policy for v in violations] == ["ceiling"]
    assert violations[0].value is None
    assert "margin_ratio=undefined" in violations[0].describe()


def test_leverage_with_no_equity_and_exposure_is_read_as_infinite() -> None:
    # given: long 10 at 100 marked at 50, balance 100: equity -400
    m = metrics_of(100, [long_btc()], {"BTC": 50})
    assert m.leverage is None and m.concentration == {"BTC": None}
    cap = policy("cap", "leverage", "less_than_or_equal", 10**6)
    conc = policy("conc", "concentration_BTC", "less_than_or_equal", 10**6)
    floor = policy("floor", "leverage", "greater_than", 1)
    # then: every cap is broken, a floor holds
    assert [v.policy for v in evaluate(m, [cap, conc, floor], "acct-1")] == ["cap", "conc"]


def test_leverage_with_no_equity_and_no_exposure_is_read_as_zero() -> None:
    m = metrics_of(-5)
    assert m.leverage is None
    cap = policy("cap", "leverage", "less_than_or_equal", 0)
    floor = policy("floor", "leverage", "greater_than", 0)
    assert [v.policy for v in evaluate(m, [cap, floor], "acct-1")] == ["floor"]


def test_concentration_of_a_symbol_not_held_is_zero() -> None:
    m = metrics_of(1000, [long_btc("1")])
    zero = policy("zero", "concentration_ETH", "equal", 0)
    some = policy("some", "concentration_ETH", "greater_than", 0)
    assert [v.policy for v in evaluate(m, [zero, some], "acct-1")] == ["some"]


def test_account_max_leverage_is_broken_by_undefined_leverage_with_exposure() -> None:
    m = metrics_of(100, [long_btc()], {"BTC": 50})
    violations = evaluate(m, [], "acct-1", max_leverage=D(1000))
    assert [(v.policy, v.policy_type) for v in violations] == [
        ("Account Max Leverage", PolicyType.HARD)]


# -- FORMULAS BY EXAMPLE --


def test_metrics_of_a_long_and_a_short_follow_the_design_formulas() -> None:
    # given: long 2 BTC at 100 (mark 110), short 10 ETH at 20 (mark 25), balance 1000
    acct_positions = {"BTC": position("BTC", 2, 100), "ETH": position("ETH", -10, 20)}
    specs = {"BTC": spec("BTC", "0.10", "0.05"), "ETH": spec("ETH", "0.20", "0.10")}
    # when
    m = compute_metrics(D(1000), acct_positions, {"BTC": D(110), "ETH": D(25)}, specs,
                        peak_equity=D(1100), daily_start_equity=D(1000))
    # then
    assert m.unrealized_pnl == D(20) + D(-50)
    assert m.equity == D(970)
    assert m.notional == D(220) + D(250)
    assert m.margin_used == D("22.0") + D("50.0")
    assert m.maintenance_margin == D("11.0") + D("25.0")
    assert m.available_margin == D(970) - D(72)
    assert m.margin_ratio == div(D(970), D(72))
    assert m.leverage == div(D(470), D(970))
    assert m.drawdown_daily == D("0.03")
    assert m.drawdown_max == div(D(1100) - D(970), D(1100))
    assert m.concentration == {"BTC": div(D(220), D(970)), "ETH": div(D(250), D(970))}
    assert m.open_positions == 2


def test_drawdown_is_zero_above_the_reference_and_without_one() -> None:
    m = compute_metrics(D(1200), {}, {}, {}, peak_equity=D(1000), daily_start_equity=D(0))
    assert m.drawdown_max == 0 and m.drawdown_daily == 0


def test_metrics_dict_has_the_keys_of_the_public_contract() -> None:
    m = metrics_of(1000, [long_btc("1")])
    assert set(m.to_dict()) == {
        "equity", "balance", "unrealized_pnl", "notional", "margin_used",
        "maintenance_margin", "available_margin", "margin_ratio", "leverage",
        "drawdown_daily", "drawdown_max", "concentration", "open_positions"}
    assert m.to_dict()["margin_ratio"] == 100.0


def test_decision_dict_has_the_keys_of_the_public_contract() -> None:
    decision = decide(order(), context(account()))
    result = decision.to_dict("ord-1", "acct-1", 42)
    assert {"approved", "violations", "rejection_reason", "post_trade_metrics",
            "processing_time_us"} <= set(result)
    assert result["approved"] is True and result["rejection_reason"] is None
    assert result["processing_time_us"] == 42
    rejected = decide(order(), context(None)).to_dict("ord-1", "acct-1", 1)
    assert rejected["rejection_reason"] == "unknown_account"
    assert rejected["post_trade_metrics"] == {}


def test_adding_to_a_position_moves_the_entry_to_the_weighted_average() -> None:
    pos, realized = apply_fill(position("BTC", 1, 100), "BTC", D(3), D(200))
    assert pos == position("BTC", 4, 175)
    assert realized == 0


def test_reducing_a_short_realises_pnl_and_keeps_the_entry() -> None:
    pos, realized = apply_fill(position("BTC", -4, 100), "BTC", D(1), D(90))
    assert pos == position("BTC", -3, 100)
    assert realized == D(10)


def test_a_fill_through_zero_realises_the_old_side_and_opens_at_the_fill_price() -> None:
    pos, realized = apply_fill(position("BTC", 2, 100), "BTC", D(-5), D(120))
    assert pos == position("BTC", -3, 120)
    assert realized == D(40)


def test_closing_a_position_leaves_it_flat_with_entry_zero() -> None:
    pos, realized = apply_fill(position("BTC", 2, 100), "BTC", D(-2), D(90))
    assert pos == position("BTC", 0, 0)
    assert realized == D(-20)


def test_opening_from_nothing_enters_at_the_fill_price() -> None:
    pos, realized = apply_fill(None, "BTC", D(-2), D(90))
    assert pos == position("BTC", -2, 90)
    assert realized == 0


# -- LIQUIDATION --


def test_account_below_maintenance_is_liquidatable_and_at_maintenance_is_not() -> None:
    # long 10 at 100, mmr 5 %: maintenance at mark 100 is 50
    specs = {"BTC": spec("BTC")}
    below = compute_metrics(D("49.99"), {"BTC": long_btc()}, {"BTC": D(100)}, specs, D(0), D(0))
    at = compute_metrics(D(50), {"BTC": long_btc()}, {"BTC": D(100)}, specs, D(0), D(0))
    flat = compute_metrics(D(-10), {}, {}, specs, D(0), D(0))
    assert is_liquidatable(below) is True
    assert is_liquidatable(at) is False
    assert is_liquidatable(flat) is False


def test_liquidation_closes_largest_notional_first_until_initial_margin_is_covered() -> None:
    # given: notionals BTC 1000, ETH 500, SOL 100 at 10 % imr: 160 of margin needed
    positions = {"BTC": position("BTC", 10, 100), "ETH": position("ETH", 50, 10),
                 "SOL": position("SOL", 10, 10)}
    marks = {"BTC": D(100), "ETH": D(10), "SOL": D(10)}
    specs = {s: spec(s) for s in marks}
    # when: equity 55 covers 60 (ETH + SOL)? no; 10 (SOL)? yes
    plan = plan_liquidation(D(55), positions, marks, specs)
    # then
    assert plan == ["BTC", "ETH"]
    assert plan_liquidation(D(60), positions, marks, specs) == ["BTC"]
    assert plan_liquidation(D(160), positions, marks, specs) == []


def test_liquidation_with_no_equity_closes_everything() -> None:
    positions = {"BTC": position("BTC", 1, 100), "ETH": position("ETH", -1, 10)}
    marks = {"BTC": D(100), "ETH": D(10)}
    specs = {s: spec(s) for s in marks}
    assert plan_liquidation(D(0), positions, marks, specs) == ["BTC", "ETH"]


def test_liquidation_ties_close_in_symbol_order() -> None:
    positions = {"ZZZ": position("ZZZ", 1, 100), "AAA": position("AAA", -1, 100)}
    marks = {"ZZZ": D(100), "AAA": D(100)}
    specs = {s: spec(s) for s in marks}
    assert plan_liquidation(D(-1), positions, marks, specs) == ["AAA", "ZZZ"]


def test_liquidation_price_of_a_long_is_where_equity_meets_maintenance() -> None:
    # equity 10 + (m - 100) == 0.05 m  =>  m = 90 / 0.95
    price = liquidation_price("BTC", D(10), {"BTC": long_btc("1")}, {"BTC": D(100)},
                              {"BTC": spec("BTC")})
    assert price == div(D(90), D("0.95"))


def test_liquidation_price_of_a_short_is_above_its_entry() -> None:
    # equity 10 - (m - 100) == 0.05 m  =>  m = 110 / 1.05
    price = liquidation_price("BTC", D(10), {"BTC": position("BTC", -1, 100)},
                              {"BTC": D(100)}, {"BTC": spec("BTC")})
    assert price == div(D(110), D("1.05"))


def test_liquidation_price_is_none_for_a_flat_or_unbreakable_position() -> None:
    specs = {"BTC": spec("BTC")}
    # a long with more balance than its whole notional can never be liquidated
    assert liquidation_price("BTC", D(1000), {"BTC": long_btc("1")}, {"BTC": D(100)},
                             specs) is None
    assert liquidation_price("BTC", D(10), {}, {"BTC": D(100)}, specs) is None
    assert liquidation_price("BTC", D(10), {"BTC": position("BTC", 0, 0)}, {"BTC": D(100)},
                             specs) is None


# -- PRECISION --


def test_order_leaving_a_tiny_negative_available_margin_is_rejected_at_any_magnitude() -> None:
    # given: exact available margin after the order is 1e17 - 1e-13 - 1e17 = -1e-13
    raw = raw_order(quantity="1000000000000")
    acct = account(balance="99999999999999999.9999999999999")
    ctx = context(acct, marks={"BTC": 1_000_000}, specs=[spec(imr="0.1")])
    # when
    decision = check(raw, ctx)
    # then
    assert decision.reason is Reason.INSUFFICIENT_MARGIN


def test_engine_results_do_not_depend_on_the_callers_decimal_context() -> None:
    import decimal
    from decimal import Decimal

    from risk_tasks.engine.model import exact

    positions = {"BTC": Position("BTC", Decimal("0.333"), Decimal("60001.17")),
                 "ETH": Position("ETH", Decimal("-7.1"), Decimal("3001.03"))}
    marks = {"BTC": Decimal("59000.01"), "ETH": Decimal("2990.07")}
    specs = {"BTC": spec("BTC"), "ETH": spec("ETH")}

    def figures() -> tuple:
        m = compute_metrics(Decimal("10000.01"), positions, marks, specs, Decimal("10500"),
                            Decimal("10100"))
        return m.equity, m.margin_ratio, m.leverage, m.concentration

    expected = figures()
    # a caller with a 3-digit context and nothing trapped gets the same exact figures
    with decimal.localcontext(decimal.Context(prec=3, traps=[])):
        assert figures() == expected
        assert decimal.getcontext().prec == 3  # and keeps its own context

    # an engine function called from another one runs in the engine's context too
    @exact
    def inner() -> int:
        return decimal.getcontext().prec

    @exact
    def outer() -> tuple[int, int]:
        return inner(), decimal.getcontext().prec

    with decimal.localcontext(decimal.Context(prec=5)):
        assert outer() == (ENGINE_CONTEXT.prec, ENGINE_CONTEXT.prec)
        assert inner() == ENGINE_CONTEXT.prec
        assert decimal.getcontext().prec == 5

    # an engine function that raised leaves the next call in the engine's context too
    @exact
    def failing() -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError):
        failing()
    with decimal.localcontext(decimal.Context(prec=5)):
        assert inner() == ENGINE_CONTEXT.prec
