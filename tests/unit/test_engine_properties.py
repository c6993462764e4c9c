"""Property tests: the Decimal engine against the exact Fraction reference (reference.py).

Numbers are drawn as multiples of 1e-4 below 1e6 (prices and quantities: ten orders of
magnitude), margin rates as multiples of 1e-4 and balances in cents. In that range every
sum and product the engine makes fits in Decimal's 28 digits, so those come out exact;
only quotients (ratios, average entries, the liquidation price) are rounded, and the
tests bound that rounding explicitly.
"""

from __future__ import annotations

import re
from decimal import Decimal
from fractions import Fraction

import orjson
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from risk_tasks.engine.liquidation import plan_liquidation
from risk_tasks.engine.metrics import compute_metrics, liquidation_price
from risk_tasks.engine.model import (
    Mark, Policy, PolicyType, Position, Reason, SymbolSpec, TradingState,
)
from risk_tasks.engine.policies import DEFAULT_POLICIES, order_policies
from risk_tasks.engine.positions import apply_fill
from risk_tasks.engine.pretrade import CheckContext, PretradeLimits
from tests.unit import reference as ref
from tests.unit.builders import NOW, check, violation_names

SYMBOLS = ("AAA", "BBB", "CCC", "DDD", "EEE", "FFF", "GGG")
ROUNDING = Fraction(1, 10**26)  # relative error allowed on one rounded Decimal quotient

# -- STRATEGIES --


def _scaled(mantissa: int, exponent: int) -> Decimal:
    return Decimal(f"{mantissa}E{exponent}")


prices = st.builds(_scaled, st.integers(1, 999_999), st.integers(-4, 0))
quantities = st.builds(_scaled, st.integers(1, 999_999), st.integers(-4, 0))
signed_quantities = st.builds(lambda q, neg: -q if neg else q, quantities, st.booleans())
money = st.builds(lambda cents: Decimal(cents).scaleb(-2), st.integers(-10**8, 10**11))
references = st.one_of(
    st.just(Decimal(0)),
    st.builds(lambda cents: Decimal(cents).scaleb(-2), st.integers(1, 10**13)),
)


@st.composite
def rates(draw: st.DrawFn, symbol: str) -> SymbolSpec:
    imr = draw(st.integers(1, 10_000))
    mmr = draw(st.integers(1, imr))  # DESIGN: mmr <= imr
    return SymbolSpec(symbol, Decimal(imr).scaleb(-4), Decimal(mmr).scaleb(-4))


@st.composite
def markets(draw: st.DrawFn, symbols: tuple[str, ...] | list[str] = SYMBOLS,
            ) -> tuple[dict[str, Decimal], dict[str, SymbolSpec]]:
    marks = {s: draw(prices) for s in symbols}
    specs = {s: draw(rates(s)) for s in symbols}
    return marks, specs


@st.composite
def books(draw: st.DrawFn, max_size: int = 6) -> dict[str, Position]:
    held = draw(st.lists(st.sampled_from(SYMBOLS), unique=True, max_size=max_size))
    return {s: Position(s, draw(signed_quantities), draw(prices)) for s in held}


@st.composite
def accounts(draw: st.DrawFn) -> dict:
    positions = draw(books())
    marks, specs = draw(markets(sorted(positions)))
    return {
        "balance": draw(money),
        "positions": positions,
        "marks": marks,
        "specs": specs,
        "peak_equity": draw(references),
        "daily_start_equity": draw(references),
    }


def to_ref(acct: dict) -> tuple:
    positions = {s: ref.Pos(ref.fr(p.quantity), ref.fr(p.entry_price))
                 for s, p in acct["positions"].items()}
    marks = {s: ref.fr(m) for s, m in acct["marks"].items()}
    rates_ = {s: ref.Rates(ref.fr(sp.imr), ref.fr(sp.mmr)) for s, sp in acct["specs"].items()}
    return ref.fr(acct["balance"]), positions, marks, rates_


def assert_ratio(engine: Decimal | None, exact: Fraction | None) -> None:
    """A quotient of two exact numbers, rounded once to 28 significant digits."""
    if exact is None:
        assert engine is None
        return
    assert engine is not None
    assert abs(ref.fr(engine) - exact) <= ROUNDING * abs(exact)


def scale_of(balance: Fraction, positions: dict, marks: dict) -> Fraction:
    """Size of the numbers an account's arithmetic handles (for relative tolerances)."""
    total = abs(balance) + 1
    for s, p in positions.items():
        total += abs(p.quantity) * (marks[s] + abs(p.entry))
    return total


# -- METRICS --


@settings(max_examples=400, deadline=None)
@given(accounts())
def test_compute_metrics_matches_exact_reference(acct: dict) -> None:
    # given
    balance, positions, marks, rates_ = to_ref(acct)
    expected = ref.metrics(balance, positions, marks, rates_, ref.fr(acct["peak_equity"]),
                           ref.fr(acct["daily_start_equity"]))
    # when
    got = compute_metrics(acct["balance"], acct["positions"], acct["marks"], acct["specs"],
                          acct["peak_equity"], acct["daily_start_equity"])
    # then: sums and products are exact in this range
    assert ref.fr(got.equity) == expected.equity
    assert ref.fr(got.balance) == expected.balance
    assert ref.fr(got.unrealized_pnl) == expected.unrealized_pnl
    assert ref.fr(got.notional) == expected.notional
    assert ref.fr(got.margin_used) == expected.margin_used
    assert ref.fr(got.maintenance_margin) == expected.maintenance_margin
    assert ref.fr(got.available_margin) == expected.available_margin
    assert got.open_positions == expected.open_positions
    # and quotients are within one rounding
    assert_ratio(got.margin_ratio, expected.margin_ratio)
    assert_ratio(got.leverage, expected.leverage)
    assert_ratio(got.drawdown_daily, expected.drawdown_daily)
    assert_ratio(got.drawdown_max, expected.drawdown_max)
    assert got.drawdown_daily >= 0 and got.drawdown_max >= 0
    assert set(got.concentration) == set(expected.concentration)
    for symbol, value in expected.concentration.items():
        assert_ratio(got.concentration[symbol], value)


@settings(max_examples=200, deadline=None)
@given(accounts(), st.data())
def test_flat_positions_count_for_nothing(acct: dict, data: st.DataObject) -> None:
    # given: the same account with one position (held or not) of quantity 0
    flat_symbol = data.draw(st.sampled_from(SYMBOLS))
    acct["marks"].setdefault(flat_symbol, Decimal(1))
    acct["specs"].setdefault(flat_symbol, SymbolSpec(flat_symbol, Decimal("0.1"), Decimal("0.05")))
    with_flat = dict(acct["positions"])
    with_flat[flat_symbol] = Position(flat_symbol, Decimal(0), Decimal(123))
    kept = {s: p for s, p in with_flat.items() if p.quantity}
    args = (acct["marks"], acct["specs"], acct["peak_equity"], acct["daily_start_equity"])
    # when
    got = compute_metrics(acct["balance"], with_flat, *args)
    # then
    assert got == compute_metrics(acct["balance"], kept, *args)
    assert flat_symbol not in got.concentration
    assert got.open_positions == len(kept)


# -- POSITIONS --


@st.composite
def fill_sequences(draw: st.DrawFn) -> list[tuple[Decimal, Decimal]]:
    """Signed fills on one symbol: random ones, full closes and flips through zero."""
    fills: list[tuple[Decimal, Decimal]] = []
    q = Decimal(0)
    for _ in range(draw(st.integers(1, 12))):
        kind = draw(st.sampled_from(("random", "random", "close", "flip", "add")))
        if kind == "close" and q:
            dq = -q
        elif kind == "flip" and q:
            dq = -q - (draw(quantities) if q > 0 else -draw(quantities))
        elif kind == "add" and q:
            dq = draw(quantities) if q > 0 else -draw(quantities)
        else:
            dq = draw(signed_quantities)
        fills.append((dq, draw(prices)))
        q += dq
    return fills


def run_engine(fills: list[tuple[Decimal, Decimal]]) -> tuple[list[Position], list[Decimal]]:
    pos: Position | None = None
    states, realized = [], []
    for dq, price in fills:
        pos, r = apply_fill(pos, "X", dq, price)
        states.append(pos)
        realized.append(r)
    return states, realized


def run_reference(fills: list[tuple[Decimal, Decimal]]) -> tuple[list[ref.Pos], list[Fraction]]:
    pos = ref.Pos(Fraction(0), Fraction(0))
    states, realized = [], []
    for dq, price in fills:
        pos, r = ref.apply_fill(pos, ref.fr(dq), ref.fr(price))
        states.append(pos)
        realized.append(r)
    return states, realized


@settings(max_examples=400, deadline=None)
@given(fill_sequences())
def test_apply_fill_sequence_matches_exact_reference(fills: list) -> None:
    # when
    states, realized = run_engine(fills)
    expected_states, expected_realized = run_reference(fills)
    # then
    traded = sum((abs(ref.fr(dq)) * ref.fr(p) for dq, p in fills), Fraction(0)) + 1
    for got, want in zip(states, expected_states):
        assert ref.fr(got.quantity) == want.quantity  # quantities add exactly
        assert got.symbol == "X"
        if want.quantity == 0:
            assert got.entry_price == 0
        else:
            # an average entry is a rounded quotient, rounded again at each averaging
            assert abs(ref.fr(got.entry_price) - want.entry) <= Fraction(1, 10**24) * want.entry
    for got_r, want_r in zip(realized, expected_realized):
        assert abs(ref.fr(got_r) - want_r) <= Fraction(1, 10**22) * traded


@settings(max_examples=300, deadline=None)
@given(fill_sequences())
def test_realised_pnl_of_a_round_trip_is_the_cash_flow(fills: list) -> None:
    # given: the fills, then one that closes whatever is left at the last price
    left = sum((dq for dq, _ in fills), Decimal(0))
    if left:
        fills = fills + [(-left, fills[-1][1])]
    # when
    states, realized = run_engine(fills)
    _, expected_realized = run_reference(fills)
    # then: flat at the end, and the total realised is minus the cash paid for the fills
    cash = -sum((ref.fr(dq) * ref.fr(p) for dq, p in fills), Fraction(0))
    traded = sum((abs(ref.fr(dq)) * ref.fr(p) for dq, p in fills), Fraction(0)) + 1
    assert states[-1].quantity == 0 and states[-1].entry_price == 0
    assert sum(expected_realized, Fraction(0)) == cash  # the reference is exact
    assert abs(sum((ref.fr(r) for r in realized), Fraction(0)) - cash) <= Fraction(1, 10**22) * traded


@settings(max_examples=300, deadline=None)
@given(fill_sequences(), prices, st.sampled_from(("close", "partial", "flip", "add")), quantities)
def test_a_fill_at_mark_conserves_realised_plus_unrealised_pnl(
    fills: list, mark: Decimal, kind: str, size: Decimal,
) -> None:
    # given: a position built by some fills, marked at ``mark``
    states, _ = run_engine(fills)
    pos = states[-1]
    q = pos.quantity
    assume(q != 0)
    sign = 1 if q > 0 else -1
    dq = {"close": -q, "partial": -q / 2, "flip": -q - sign * size, "add": sign * size}[kind]
    before = ref.fr(q) * (ref.fr(mark) - ref.fr(pos.entry_price))
    # when: a fill at mark
    after, realized = apply_fill(pos, "X", dq, mark)
    # then: PnL moves from unrealised to realised, never appears or vanishes
    total = ref.fr(realized) + ref.fr(after.quantity) * (ref.fr(mark) - ref.fr(after.entry_price))
    size_of = (abs(ref.fr(q)) + abs(ref.fr(dq))) * (ref.fr(mark) + ref.fr(pos.entry_price)) + 1
    assert abs(total - before) <= Fraction(1, 10**22) * size_of
    if kind == "close":
        assert after.quantity == 0 and after.entry_price == 0


# -- LIQUIDATION --


@st.composite
def stressed_accounts(draw: st.DrawFn) -> dict:
    """Accounts whose equity is drawn around their initial margin (-20 % to 150 %), so
    that plans of every length come up, not only empty ones."""
    acct = draw(accounts())
    balance, positions, marks, rates_ = to_ref(acct)
    m = ref.metrics(balance, positions, marks, rates_)
    target = Fraction(draw(st.integers(-20, 150)), 100) * m.margin_used
    cents = round((target - m.unrealized_pnl) * 100)
    acct["balance"] = Decimal(cents).scaleb(-2)
    return acct


@settings(max_examples=300, deadline=None)
@given(st.one_of(stressed_accounts(), accounts()))
def test_plan_liquidation_matches_exact_reference(acct: dict) -> None:
    # given
    balance, positions, marks, rates_ = to_ref(acct)
    # when
    plan = plan_liquidation(acct["balance"], acct["positions"], acct["marks"], acct["specs"])
    # then
    assert plan == ref.liquidation_plan(balance, positions, marks, rates_)
    event(f"plan length {len(plan)} of {len(positions)}")
    m = ref.metrics(balance, positions, marks, rates_)
    held = [s for s, p in positions.items() if p.quantity]
    if m.equity <= 0:
        assert sorted(plan) == sorted(held)
    notionals = [m.notional_by_symbol[s] for s in plan]
    assert notionals == sorted(notionals, reverse=True)


@settings(max_examples=300, deadline=None)
@given(accounts(), st.data())
def test_liquidation_price_puts_equity_at_maintenance(acct: dict, data: st.DataObject) -> None:
    # given: a held symbol
    assume(acct["positions"])
    symbol = data.draw(st.sampled_from(sorted(acct["positions"])))
    balance, positions, marks, rates_ = to_ref(acct)
    # when
    price = liquidation_price(symbol, acct["balance"], acct["positions"], acct["marks"],
                              acct["specs"])
    # then
    expected = ref.liquidation_price(symbol, balance, positions, marks, rates_)
    if expected is None:
        assert price is None
        return
    assert price is not None and price > 0
    assert abs(ref.fr(price) - expected) <= ROUNDING * expected
    at_price = dict(marks)
    at_price[symbol] = ref.fr(price)
    m = ref.metrics(balance, positions, at_price, rates_)
    scale = scale_of(balance, positions, at_price)
    assert abs(m.equity - m.maintenance_margin) <= Fraction(1, 10**20) * scale


# -- PRE-TRADE DECISIONS --

METRIC_NAMES = ("leverage", "margin_ratio", "drawdown_daily", "drawdown_max",
                "concentration_AAA", "concentration_BBB")
OPERATOR_NAMES = tuple(ref.HOLDS)


@st.composite
def random_policies(draw: st.DrawFn) -> list[Policy]:
    chosen = list(draw(st.lists(st.sampled_from(DEFAULT_POLICIES), unique=True)))
    for i in range(draw(st.integers(0, 3))):
        scope = draw(st.sampled_from(("account", "symbol", "strategy")))
        scope_id = {
            "account": draw(st.sampled_from((None, "*", "acct-1", "someone-else"))),
            "symbol": draw(st.sampled_from(SYMBOLS[:3])),
            "strategy": draw(st.sampled_from(("alpha", "beta"))),
        }[scope]
        chosen.append(Policy(
            f"P{i}", draw(st.sampled_from(list(PolicyType))), draw(st.sampled_from(METRIC_NAMES)),
            draw(st.sampled_from(OPERATOR_NAMES)),
            Decimal(draw(st.integers(0, 3000))).scaleb(-2), scope=scope, scope_id=scope_id,
            enabled=draw(st.booleans()), priority=draw(st.integers(0, 5)),
        ))
    return list(order_policies(chosen))


def ref_applies(p: Policy, held: set[str], strategy_id: str | None) -> bool:
    """Scopes as policies.py documents them."""
    if not p.enabled:
        return False
    if p.scope == "account":
        return p.scope_id in (None, "*", "acct-1")
    if p.scope == "symbol":
        return p.scope_id in held
    return strategy_id is not None and p.scope_id == strategy_id


@st.composite
def pretrade_cases(draw: st.DrawFn) -> dict:
    positions = draw(books(max_size=4))
    symbol = draw(st.sampled_from(SYMBOLS[:4]))
    marks, specs = draw(markets(sorted(set(positions) | {symbol})))
    if draw(st.booleans()) and symbol in positions:
        # an order of the held size, to close exactly or flip through zero
        quantity = abs(positions[symbol].quantity) * draw(st.sampled_from((1, 2)))
    else:
        quantity = draw(quantities)
    raw = {
        "order_id": "o-1", "account_id": "acct-1", "symbol": symbol,
        "side": draw(st.sampled_from(("BUY", "SELL"))), "quantity": str(quantity),
        "order_type": "MARKET", "reduce_only": draw(st.booleans()),
    }
    if draw(st.booleans()):
        raw["order_type"] = "LIMIT"
        raw["price"] = str(draw(prices))
    strategy = draw(st.sampled_from((None, "alpha", "beta")))
    if strategy:
        raw["strategy_id"] = strategy
    return {
        "raw": raw, "marks": marks, "specs": specs, "positions": positions,
        "balance": draw(money), "peak": draw(references), "daily": draw(references),
        "max_leverage": draw(st.one_of(st.none(), st.integers(1, 50).map(Decimal))),
        "policies": draw(random_policies()),
    }


def pretrade_context(case: dict) -> CheckContext:
    from risk_tasks.engine.model import Account

    acct = Account("acct-1", case["balance"], TradingState.ACTIVE, case["peak"], case["daily"],
                   case["max_leverage"], case["positions"])
    return CheckContext(
        now=NOW, platform_state=TradingState.ACTIVE, account=acct,
        marks={s: Mark(m, NOW) for s, m in case["marks"].items()}, specs=case["specs"],
        policies=tuple(case["policies"]), recent_orders=1,
        limits=PretradeLimits(price_stale_seconds=5.0, rate_limit=10),
    )


def near(value: Fraction | float, threshold: Fraction) -> bool:
    """Within rounding distance of a threshold without being on it."""
    if isinstance(value, float):  # +inf
        return False
    return value != threshold and abs(value - threshold) <= Fraction(1, 10**9) * (abs(threshold) + 1)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pretrade_cases())
def test_decide_agrees_with_the_reference_on_margin_and_policies(case: dict) -> None:
    # given
    raw = case["raw"]
    symbol = raw["symbol"]
    balance, positions, marks, rates_ = to_ref({
        "balance": case["balance"], "positions": case["positions"], "marks": case["marks"],
        "specs": case["specs"]})
    held = positions.get(symbol, ref.Pos(Fraction(0), Fraction(0)))
    q = held.quantity
    delta = ref.fr(Decimal(raw["quantity"])) * (1 if raw["side"] == "BUY" else -1)
    if raw["reduce_only"]:
        opposite = q != 0 and (q > 0) != (delta > 0)
        if not opposite:
            # when / then: nothing to reduce is refused (engine choice: invalid_request)
            decision = check(raw, pretrade_context(case))
            assert decision.reason is Reason.INVALID_REQUEST
            return
        delta = (1 if delta > 0 else -1) * min(abs(delta), abs(q))
    raises = abs(q + delta) > abs(q)
    fill_price = ref.fr(Decimal(raw["price"])) if "price" in raw else marks[symbol]
    # when
    decision = check(raw, pretrade_context(case))
    event(f"raises={raises} outcome={decision.reason}")
    # then: an order that does not make |position| larger always passes here
    if not raises:
        assert decision.approved, decision
        assert decision.reason not in (Reason.INSUFFICIENT_MARGIN, Reason.POLICY_VIOLATION)
        return
    # and an order that does is judged on the exact post-trade state
    new_pos, realized = ref.apply_fill(held, delta, fill_price)
    post_positions = dict(positions)
    post_positions[symbol] = new_pos
    post = ref.metrics(balance + realized, post_positions, marks, rates_, ref.fr(case["peak"]),
                       ref.fr(case["daily"]))
    tolerance = Fraction(1, 10**20) * scale_of(balance, post_positions, marks)
    assume(post.available_margin == 0 or abs(post.available_margin) > tolerance)
    if decision.approved:
        assert post.available_margin >= 0
    if post.available_margin < 0:
        assert decision.reason is Reason.INSUFFICIENT_MARGIN
        need = ref.fr(Decimal(raw["quantity"])) * fill_price * rates_[symbol].imr
        available = ref.metrics(balance, positions, marks, rates_).available_margin
        match = re.fullmatch(r"insufficient margin: need (-?\d+\.\d\d), available (-?\d+\.\d\d)",
                             decision.message or "")
        assert match, decision.message
        assert abs(Fraction(match[1]) - need) <= Fraction(1, 200)
        assert abs(Fraction(match[2]) - available) <= Fraction(1, 200)
        return
    held_after = {s for s, p in post_positions.items() if p.quantity}
    violated = []
    for p in case["policies"]:
        if ref_applies(p, held_after, raw.get("strategy_id")):
            value = ref.policy_value(post, p.metric)
            assume(not near(value, ref.fr(p.threshold)))
            if not ref.policy_holds(post, p.metric, p.operator, ref.fr(p.threshold)):
                violated.append(p)
    if case["max_leverage"] is not None:
        value = ref.policy_value(post, "leverage")
        assume(not near(value, ref.fr(case["max_leverage"])))
        if not value <= ref.fr(case["max_leverage"]):
            violated.append(Policy("Account Max Leverage", PolicyType.HARD, "leverage",
                                   "less_than_or_equal", case["max_leverage"]))
    assert violation_names(decision) == {p.name for p in violated}
    blocking = [p for p in violated if p.type is not PolicyType.SOFT]
    if blocking:
        assert decision.reason is Reason.POLICY_VIOLATION
    else:
        assert decision.approved, decision


# -- REJECTION ORDER --

PINNED = [
    Reason.INVALID_REQUEST, Reason.EMERGENCY_STOP_ACTIVE, Reason.UNKNOWN_ACCOUNT,
    Reason.ACCOUNT_HALTED, Reason.UNKNOWN_SYMBOL, Reason.NO_PRICE, Reason.PRICE_COLLAR,
    Reason.MAX_ORDER_NOTIONAL, Reason.RATE_LIMITED, Reason.INSUFFICIENT_MARGIN,
    Reason.POLICY_VIOLATION,
]


def test_reason_enum_lists_the_pinned_order() -> None:
    assert [r.value for r in Reason] == [r.value for r in PINNED]


@st.composite
def failing_contexts(draw: st.DrawFn) -> tuple[set[Reason], dict, CheckContext]:
    """A context in which each reason of a random subset fails, and nothing else."""
    from risk_tasks.engine.model import Account

    failing = set(draw(st.sets(st.sampled_from(PINNED))))
    fails = failing.__contains__
    mark = Decimal(100)
    raw = {"order_id": "o-1", "account_id": "acct-1", "symbol": "AAA",
           "side": draw(st.sampled_from(("BUY", "SELL"))), "quantity": "1",
           "order_type": "MARKET"}
    if fails(Reason.INVALID_REQUEST):
        raw.update(draw(st.sampled_from(({"quantity": "-1"}, {"quantity": "NaN"},
                                         {"side": "HOLD"}, {"reduceOnly": True}))))
    if fails(Reason.PRICE_COLLAR):
        raw.update(order_type="LIMIT", price=draw(st.sampled_from(("200", "94.99", "105.01"))))
    elif draw(st.booleans()):
        raw.update(order_type="LIMIT", price=draw(st.sampled_from(("100", "95", "105"))))
    fill = Decimal(raw.get("price", mark))
    if fails(Reason.MAX_ORDER_NOTIONAL):
        cap = fill - Decimal("0.01")
    else:
        cap = draw(st.sampled_from((None, fill, Decimal(10**6))))
    spec = SymbolSpec("AAA", Decimal("0.1"), Decimal("0.05"), Decimal("0.05"), cap)
    platform = TradingState.ACTIVE
    status = TradingState.ACTIVE
    if fails(Reason.EMERGENCY_STOP_ACTIVE):
        platform = TradingState.HALTED
    if fails(Reason.ACCOUNT_HALTED):
        how = draw(st.sampled_from(("halted", "reducing", "platform_reducing")))
        if how == "platform_reducing" and platform is TradingState.ACTIVE:
            platform = TradingState.REDUCING
        else:
            status = TradingState.HALTED if how != "reducing" else TradingState.REDUCING
    policies = list(DEFAULT_POLICIES)
    # a soft policy that always fails, which never blocks
    policies.append(Policy("Always Warn", PolicyType.SOFT, "drawdown_max", "less_than",
                           Decimal(0)))
    max_leverage = None
    if fails(Reason.POLICY_VIOLATION):
        how = draw(st.sampled_from(("hard", "emergency", "max_leverage")))
        if how == "max_leverage":
            max_leverage = Decimal("0.000001")
        else:
            policies.append(Policy("Always Fails", PolicyType(how), "drawdown_max", "less_than",
                                   Decimal(0)))
    balance = Decimal(0) if fails(Reason.INSUFFICIENT_MARGIN) else Decimal(10**6)
    acct = None if fails(Reason.UNKNOWN_ACCOUNT) else Account(
        "acct-1", balance, status, max_leverage=max_leverage,
        positions={"BBB": Position("BBB", Decimal(2), Decimal(50))})
    marks = {"BBB": Mark(Decimal(50), NOW)}
    if not fails(Reason.NO_PRICE):
        marks["AAA"] = Mark(mark, NOW - draw(st.sampled_from((0.0, 5.0))))
    elif draw(st.booleans()):
        marks["AAA"] = Mark(mark, NOW - 5.001)  # older than the staleness
    specs = {"BBB": SymbolSpec("BBB", Decimal("0.1"), Decimal("0.05"))}
    if not fails(Reason.UNKNOWN_SYMBOL):
        specs["AAA"] = spec
    recent = 11 if fails(Reason.RATE_LIMITED) else draw(st.integers(1, 10))
    ctx = CheckContext(NOW, platform, acct, marks, specs, tuple(order_policies(policies)),
                       recent, PretradeLimits(5.0, 10))
    return failing, raw, ctx


@settings(max_examples=400, deadline=None)
@given(failing_contexts())
def test_first_failing_check_in_the_pinned_order_wins(case: tuple) -> None:
    # given
    failing, raw, ctx = case
    # when
    decision = check(raw, ctx)
    # then
    if not failing:
        assert decision.approved, decision
        assert violation_names(decision) == {"Always Warn"}
        return
    expected = next(r for r in PINNED if r in failing)
    assert not decision.approved
    assert decision.reason is expected, (sorted(r.value for r in failing), decision)


# -- THE ONE-PASS APPROVAL --

def _one_pass_agrees(raw: dict, ctx: CheckContext) -> bool:
    """``approve_quickly`` answers only clean approvals, and exactly as ``decide`` does.
    Returns whether it answered."""
    from risk_tasks.engine.pretrade import approve_quickly, decide
    from risk_tasks.engine.validation import InvalidInput, validate_order

    try:
        order = validate_order(raw)
    except InvalidInput:
        return False
    quick = approve_quickly(order, ctx)
    full = decide(order, ctx)
    if quick is None:
        return False
    assert full.approved and not full.violations, full
    assert quick == full.to_dict("o-1", "acct-1", 0)["post_trade_metrics"]
    # the same floats and the same keys in the same order, so the same JSON
    assert orjson.dumps(quick) == orjson.dumps(full.metrics.to_dict())
    return True


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pretrade_cases(), st.sampled_from((0.0, 1.0, 6.0)), st.integers(1, 12), st.booleans())
def test_the_one_pass_approval_is_decide_on_every_case_it_answers(
        case: dict, age: float, recent: int, rich: bool) -> None:
    # given: random accounts, orders and policies, some marks stale, some over the rate,
    # half of the accounts rich enough that most of their orders pass
    if rich:
        case = dict(case, balance=Decimal(10**12), peak=Decimal(0), daily=Decimal(0))
    ctx = pretrade_context(case)
    stale = {s: Mark(m.price, NOW - age) for s, m in list(ctx.marks.items())[:1]}
    ctx = CheckContext(ctx.now, ctx.platform_state, ctx.account, {**ctx.marks, **stale},
                       ctx.specs, ctx.policies, recent, ctx.limits)
    # when / then
    answered = _one_pass_agrees(case["raw"], ctx)
    event(f"one pass answered={answered}")


@settings(max_examples=400, deadline=None)
@given(failing_contexts())
def test_the_one_pass_approval_leaves_every_rejection_to_decide(case: tuple) -> None:
    # given: a context where each reason of a random subset fails (and a soft policy warns)
    failing, raw, ctx = case
    # when / then: it never answers, since every case has a warning or a rejection
    assert not _one_pass_agrees(raw, ctx)
    quiet = CheckContext(ctx.now, ctx.platform_state, ctx.account, ctx.marks, ctx.specs,
                         tuple(p for p in ctx.policies if p.name != "Always Warn"),
                         ctx.recent_orders, ctx.limits)
    answered = _one_pass_agrees(raw, quiet)
    # without the warning, the context where nothing fails is a clean approval
    assert answered == (not failing), (failing, raw)
