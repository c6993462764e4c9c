"""Property tests: the monitor's float64 shard formulas (engine/vector.py) against the
exact ``Decimal`` engine (compute_metrics, is_liquidatable, policies.evaluate).

A drawn shard has 1-8 accounts with 0-6 positions each (long and short) over six
symbols, prices and quantities from 1e-4 to 1e6, margin rates with mmr <= imr, balances
from -1e6 to 1e9, peaks and day-start equities (a NaN day-start is the 00:00 UTC reset:
it becomes equity), optional per-account leverage caps, some symbols without a usable
price (NaN mark), the five default policies and up to five random ones whose thresholds
are often drawn right at, or a hair away from, an account's exact metric.

The reference is what the monitor means: the peak is first raised to equity, a NaN
day-start is equity, and policies apply to priced accounts with positions.

Tolerance (what "within 1e-9 relative" means near 0). float64 keeps about 16 digits of
the largest number a result is computed from, so:

- a sum ``x`` whose terms have magnitude ``scale`` (for equity: ``|balance| +
  sum |q| (mark + entry)``; for notional and margins, which add positive terms, ``scale``
  is the sum itself) must satisfy ``|x_float - x| <= 1e-9 |x| + 1e-12 scale``;
- a quotient ``r = a / b`` must satisfy ``|r_float - r| <= 1e-9 |r| + 1e-12 (scale_a +
  |r| scale_b) / |b|`` (first-order propagation of the same bound), and is not compared
  when ``|b| <= 1e-12 scale_b``: there even the sign of ``b`` is not determined in
  float64 (for example equity left after a 99.9999999 % loss).

The ``1e-12 scale`` floor is a thousand times the worst rounding of a few float64
operations (about 7e-16 scale), so it only forgives rounding, never a wrong formula.
Decisions (liquidatable, each policy) must be equal wherever the engine does not flag
them ``ambiguous``.

Runs without servers: ``RISK_TEST_SKIP_SERVERS=1 pytest tests/unit/test_vector.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal

import numpy as np
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis.errors import InvalidArgument
from hypothesis import strategies as st

from risk_tasks.engine.metrics import compute_metrics, is_liquidatable
from risk_tasks.engine.model import Metrics, Policy, PolicyType, Position, SymbolSpec
from risk_tasks.engine.policies import (
    DEFAULT_POLICIES, OPERATORS, comparable_value, evaluate as evaluate_policies,
    order_policies,
)
from risk_tasks.engine.vector import Book, evaluate, policy_hits

SYMBOLS = ("S0", "S1", "S2", "S3", "S4", "S5")
REL = 1e-9  # relative tolerance of every metric
FLOOR = 1e-12  # absolute floor, as a fraction of the magnitude of the terms (see above)
CONDITION = 1e5  # decisions compared where equity's terms are at most this times larger
NEAR = (Decimal(0), Decimal("1e-15"), Decimal("1e-12"), Decimal("1e-10"),
        Decimal("1e-9"), Decimal("1e-8"), Decimal("1e-6"))

# -- STRATEGIES --


def _scaled(mantissa: int, exponent: int) -> Decimal:
    return Decimal(mantissa).scaleb(exponent)


prices = st.builds(_scaled, st.integers(1, 999_999), st.integers(-4, 0))
quantities = st.builds(_scaled, st.integers(1, 999_999), st.integers(-4, 0))
signed_quantities = st.builds(lambda q, short: -q if short else q, quantities, st.booleans())
balances = st.one_of(
    st.builds(lambda cents: Decimal(cents).scaleb(-2), st.integers(-10**8, 10**11)),
    st.builds(lambda units: Decimal(units), st.integers(0, 10_000)),
)
references = st.one_of(
    st.just(Decimal(0)),
    st.builds(lambda cents: Decimal(cents).scaleb(-2), st.integers(1, 10**11)),
)
caps = st.one_of(st.none(), st.sampled_from([Decimal(1), Decimal("2.5"), Decimal(5),
                                             Decimal(10), Decimal(20), Decimal(100)]))


@st.composite
def specs(draw: st.DrawFn, symbol: str) -> SymbolSpec:
    imr = draw(st.integers(1, 10_000))
    mmr = draw(st.integers(1, imr))  # DESIGN: mmr <= imr
    return SymbolSpec(symbol, Decimal(imr).scaleb(-4), Decimal(mmr).scaleb(-4))


@dataclass
class Acct:
    account_id: str
    balance: Decimal
    positions: dict[str, Position]
    peak: Decimal
    daily: Decimal | None  # None: reset to equity (NaN in the arrays)
    max_leverage: Decimal | None


@dataclass
class Shard:
    accounts: list[Acct]
    marks: dict[str, Decimal | None]  # None: no usable price
    specs: dict[str, SymbolSpec]
    policies: tuple[Policy, ...]

    def priced(self, acct: Acct) -> bool:
        return all(self.marks[s] is not None for s in acct.positions)


def exact_metrics(shard: Shard, acct: Acct) -> Metrics:
    """Metrics as the monitor means them: peak raised to equity, NaN day-start = equity."""
    marks = {s: m for s, m in shard.marks.items() if m is not None}
    base = compute_metrics(acct.balance, acct.positions, marks, shard.specs, acct.peak,
                           acct.peak)
    peak = max(acct.peak, base.equity)
    daily = base.equity if acct.daily is None else acct.daily
    return compute_metrics(acct.balance, acct.positions, marks, shard.specs, peak, daily)


METRICS = ("leverage", "margin_ratio", "drawdown_daily", "drawdown_max")


@st.composite
def shards(draw: st.DrawFn) -> Shard:
    marks = {s: draw(st.one_of(prices, prices, prices, prices, prices, st.none()))
             for s in SYMBOLS}
    symbol_specs = {s: draw(specs(s)) for s in SYMBOLS}
    shard = Shard([], marks, symbol_specs, ())
    for i in range(draw(st.integers(1, 8))):
        held = draw(st.lists(st.sampled_from(SYMBOLS), unique=True, max_size=6))
        positions = {s: Position(s, draw(signed_quantities), draw(prices)) for s in held}
        acct = Acct(f"acct-{i}", draw(balances), positions, draw(references),
                    draw(st.one_of(st.none(), references)), draw(caps))
        if positions and shard.priced(acct) and draw(st.booleans()):
            # Right at (or a hair from) the liquidation threshold: equity ~ maintenance.
            m = exact_metrics(shard, acct)
            maintenance = m.maintenance_margin
            nudge = draw(st.sampled_from(NEAR)) * draw(st.sampled_from([-1, 1]))
            acct.balance = maintenance - m.unrealized_pnl + nudge * max(maintenance, Decimal(1))
        shard.accounts.append(acct)
    accounts = shard.accounts
    # Thresholds: arbitrary, or at / a hair away from an exact metric of some account.
    targets = []
    for acct in accounts:
        if acct.positions and shard.priced(acct):
            m = exact_metrics(shard, acct)
            for metric in METRICS:
                value = comparable_value(m, metric)
                if value.is_finite():
                    targets.append((metric, value))
            for symbol, value in m.concentration.items():
                if value is not None:
                    targets.append((f"concentration_{symbol}", value))
    policies = []
    for k in range(draw(st.integers(0, 5))):
        if targets and draw(st.booleans()):
            metric, value = draw(st.sampled_from(targets))
            nudge = draw(st.sampled_from(NEAR)) * draw(st.sampled_from([-1, 1]))
            threshold = value * (1 + nudge)
        else:
            metric = draw(st.sampled_from(
                METRICS + tuple(f"concentration_{s}" for s in SYMBOLS) + ("concentration_ZZ",)))
            threshold = draw(st.sampled_from([Decimal(0), Decimal("0.1"), Decimal("0.25"),
                                              Decimal(1), Decimal(3), Decimal(10)]))
        scope, scope_id = draw(st.sampled_from([
            ("account", None), ("account", "*"), ("account", "acct-0"), ("account", "nobody"),
            ("symbol", "S0"), ("symbol", "S3"), ("symbol", "ZZ")]))
        policies.append(Policy(f"random-{k}", draw(st.sampled_from(list(PolicyType))), metric,
                               draw(st.sampled_from(sorted(OPERATORS))), threshold,
                               scope=scope, scope_id=scope_id, priority=k))
    shard.policies = order_policies(DEFAULT_POLICIES + tuple(policies))
    return shard


# -- THE SHARD AS THE MONITOR'S ARRAYS --


@dataclass
class Arrays:
    book: Book
    marks: np.ndarray
    imr: np.ndarray
    mmr: np.ndarray
    peak: np.ndarray
    daily: np.ndarray
    max_leverage: np.ndarray
    index: dict[str, int]
    slot_of: dict[str, int]


def to_arrays(shard: Shard) -> Arrays:
    index = {s: i for i, s in enumerate(SYMBOLS)}
    slots, syms, qtys, entries = [], [], [], []
    for slot, acct in enumerate(shard.accounts):
        for symbol, pos in acct.positions.items():
            slots.append(slot)
            syms.append(index[symbol])
            qtys.append(float(pos.quantity))
            entries.append(float(pos.entry_price))
    book = Book(np.array([float(a.balance) for a in shard.accounts]),
                np.array(slots, dtype=np.int64), np.array(syms, dtype=np.int64),
                np.array(qtys, dtype=np.float64), np.array(entries, dtype=np.float64))
    return Arrays(
        book=book,
        marks=np.array([math.nan if shard.marks[s] is None else float(shard.marks[s])
                        for s in SYMBOLS]),
        imr=np.array([float(shard.specs[s].imr) for s in SYMBOLS]),
        mmr=np.array([float(shard.specs[s].mmr) for s in SYMBOLS]),
        peak=np.array([float(a.peak) for a in shard.accounts]),
        daily=np.array([math.nan if a.daily is None else float(a.daily)
                        for a in shard.accounts]),
        max_leverage=np.array([math.nan if a.max_leverage is None else float(a.max_leverage)
                               for a in shard.accounts]),
        index=index,
        slot_of={a.account_id: i for i, a in enumerate(shard.accounts)},
    )


# -- TOLERANCES --


def equity_scale(shard: Shard, acct: Acct) -> float:
    total = abs(acct.balance)
    for symbol, pos in acct.positions.items():
        total += abs(pos.quantity) * (shard.marks[symbol] + pos.entry_price)
    return float(total)


def assert_sum(name: str, got: float, exact: Decimal, scale: float) -> None:
    x = float(exact)
    assert abs(got - x) <= REL * abs(x) + FLOOR * scale, (name, got, exact, scale)


def assert_quotient(name: str, got: float, exact: Decimal | None, numerator_scale: float,
                    denominator: Decimal, denominator_scale: float) -> bool:
    """Compare a quotient; False (not compared) when its denominator's sign is not
    determined in float64. ``exact`` None or infinite: undefined, read as +inf."""
    b = abs(float(denominator))
    if b <= FLOOR * denominator_scale:
        return False
    if exact is None or not exact.is_finite():
        assert got == math.inf, (name, got, exact)
        return True
    r = float(exact)
    tolerance = REL * abs(r) + FLOOR * (numerator_scale + abs(r) * denominator_scale) / b
    assert abs(got - r) <= tolerance, (name, got, exact, tolerance)
    return True


def comparable(m: Metrics, metric: str) -> Decimal:
    return comparable_value(m, metric)


# -- THE PROPERTIES --


def note(text: str) -> None:
    """A Hypothesis event (statistics); a no-op in the plain example tests."""
    try:
        event(text)
    except InvalidArgument:
        pass


def check_shard(shard: Shard) -> None:
    arrays = to_arrays(shard)
    sweep = evaluate(arrays.book, arrays.marks, arrays.imr, arrays.mmr, arrays.peak,
                     arrays.daily)
    priced = (sweep.open_positions > 0) & ~sweep.unpriced
    hits = policy_hits(arrays.book, sweep, shard.policies, priced, arrays.index,
                       arrays.slot_of, arrays.max_leverage)

    for slot, acct in enumerate(shard.accounts):
        assert sweep.open_positions[slot] == len(acct.positions)
        if not shard.priced(acct):
            # Unpriced: flagged, its peak not raised, and no policy decided for it.
            assert sweep.unpriced[slot]
            assert sweep.peak[slot] == arrays.peak[slot]
            assert not any(hit.violated[slot] for hit in hits)
            note("unpriced account")
            continue
        assert not sweep.unpriced[slot]
        m = exact_metrics(shard, acct)
        scale = equity_scale(shard, acct)
        eq = m.equity
        # Sums.
        assert_sum("equity", sweep.equity[slot], eq, scale)
        assert_sum("unrealized_pnl", sweep.upnl[slot], m.unrealized_pnl, scale)
        assert_sum("notional", sweep.notional[slot], m.notional, float(m.notional))
        assert_sum("margin_used", sweep.margin_used[slot], m.margin_used, float(m.margin_used))
        assert_sum("maintenance", sweep.maintenance[slot], m.maintenance_margin,
                   float(m.maintenance_margin))
        # The peak is raised to equity (never lowered) and a NaN day-start becomes equity.
        assert sweep.peak[slot] >= arrays.peak[slot]
        assert_sum("peak", sweep.peak[slot], max(acct.peak, eq), scale + float(acct.peak))
        if acct.daily is None:
            assert sweep.daily[slot] == sweep.equity[slot]
            assert sweep.drawdown_daily[slot] == 0.0
        # Quotients.
        if m.margin_used:
            assert_quotient("margin_ratio", sweep.margin_ratio[slot], m.margin_ratio, scale,
                            m.margin_used, float(m.margin_used))
        else:
            assert sweep.margin_ratio[slot] == math.inf
        if acct.positions:
            compared = assert_quotient("leverage", sweep.leverage[slot],
                                       comparable(m, "leverage"), float(m.notional), eq, scale)
            note("leverage compared" if compared else "leverage: equity sign undetermined")
        daily = eq if acct.daily is None else acct.daily
        if daily > 0:
            assert_quotient("drawdown_daily", sweep.drawdown_daily[slot], m.drawdown_daily,
                            scale + float(daily), daily, float(daily))
        else:
            assert sweep.drawdown_daily[slot] == 0.0
        peak = max(acct.peak, eq)
        if peak > 0:
            assert_quotient("drawdown_max", sweep.drawdown_max[slot], m.drawdown_max,
                            scale + float(peak), peak, float(peak))
        else:
            assert sweep.drawdown_max[slot] == 0.0
        assert sweep.drawdown_daily[slot] >= 0 and sweep.drawdown_max[slot] >= 0
        # Decisions: equal wherever the engine does not call them ambiguous, for equity
        # that float64 can resolve (see test_liquidation_of_a_remainder_equity below).
        if scale > CONDITION * max(abs(float(eq)), float(m.maintenance_margin), 1.0):
            note("decision not compared: equity is the remainder of far larger numbers")
            continue
        liquidatable = is_liquidatable(m)
        if sweep.liquidation_ambiguous[slot]:
            note("liquidation ambiguous")
        else:
            assert bool(sweep.liquidatable[slot]) == liquidatable, (
                "liquidatable", acct, sweep.equity[slot], sweep.maintenance[slot])
            note(f"liquidatable={liquidatable}")
        if not acct.positions:
            # The monitor evaluates policies for accounts with positions only.
            assert not any(hit.violated[slot] for hit in hits)
            continue
        violated = {v.policy for v in evaluate_policies(m, shard.policies, acct.account_id,
                                                        None, acct.max_leverage)}
        for hit in hits:
            name = hit.policy.name
            if hit.ambiguous[slot]:
                note("policy ambiguous")
                continue
            assert bool(hit.violated[slot]) == (name in violated), (
                name, hit.policy, acct, hit.values[slot])
        # Every exact violation belongs to a policy the sweep decided.
        assert violated <= {hit.policy.name for hit in hits}, violated


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shards())
def test_vector_sweep_matches_the_exact_engine(shard: Shard) -> None:
    check_shard(shard)


def _one(balance: str, positions: dict[str, tuple[str, str]], marks: dict[str, str],
         peak: str = "0", daily: str | None = None, policies: tuple[Policy, ...] = (),
         max_leverage: str | None = None, rates: tuple[str, str] = ("0.10", "0.05")) -> Shard:
    acct = Acct("acct-0", Decimal(balance),
                {s: Position(s, Decimal(q), Decimal(e)) for s, (q, e) in positions.items()},
                Decimal(peak), None if daily is None else Decimal(daily),
                None if max_leverage is None else Decimal(max_leverage))
    all_marks = {s: (Decimal(marks[s]) if s in marks else None) for s in SYMBOLS}
    specs_ = {s: SymbolSpec(s, Decimal(rates[0]), Decimal(rates[1])) for s in SYMBOLS}
    return Shard([acct], all_marks, specs_, order_policies(DEFAULT_POLICIES + policies))


def test_known_shard_matches_by_hand() -> None:
    # given: 10 000 balance, long 100 S0 bought at 100, now 92, peak 12 000, day 11 000
    shard = _one("10000", {"S0": ("100", "100")}, {"S0": "92"}, peak="12000", daily="11000")
    arrays = to_arrays(shard)
    # when
    sweep = evaluate(arrays.book, arrays.marks, arrays.imr, arrays.mmr, arrays.peak,
                     arrays.daily)
    # then: equity 9 200, notional 9 200, margin 920, maintenance 460
    assert sweep.equity[0] == 9200.0
    assert sweep.notional[0] == 9200.0
    assert math.isclose(sweep.margin_used[0], 920.0, rel_tol=1e-15)
    assert math.isclose(sweep.maintenance[0], 460.0, rel_tol=1e-15)
    assert math.isclose(sweep.drawdown_max[0], 2800 / 12000, rel_tol=1e-15)
    assert math.isclose(sweep.drawdown_daily[0], 1800 / 11000, rel_tol=1e-15)
    assert sweep.peak[0] == 12000.0 and not sweep.liquidatable[0]
    check_shard(shard)


def test_unpriced_account_is_flagged_and_its_peak_is_not_raised() -> None:
    # given: a profitable position whose symbol has no usable price
    shard = _one("1000", {"S0": ("10", "100"), "S1": ("5", "10")}, {"S0": "500"}, peak="900")
    arrays = to_arrays(shard)
    # when
    sweep = evaluate(arrays.book, arrays.marks, arrays.imr, arrays.mmr, arrays.peak,
                     arrays.daily)
    # then
    assert sweep.unpriced[0]
    assert sweep.peak[0] == 900.0
    check_shard(shard)


@example(_one("100", {"S0": ("1", "100")}, {"S0": "100"}, rates=("1", "1")))  # equity = margin
@example(_one("500", {"S0": ("100", "100")}, {"S0": "100"}))  # equity = maintenance
@example(_one("400", {"S0": ("-100", "100")}, {"S0": "100"}, max_leverage="25"))  # at the cap
@example(_one("1000", {"S0": ("100", "100")}, {"S0": "90"}, daily="1000"))  # drawdown 0.1 exactly
@given(shards())
@settings(max_examples=1, deadline=None)
def test_decisions_exactly_at_a_threshold_are_flagged_or_right(shard: Shard) -> None:
    check_shard(shard)


def test_liquidation_of_a_remainder_equity_is_flagged_or_right() -> None:
    # given: long 999 999.9999 of a coin bought at 999 999.9999 that crashed to 1.0001,
    # and a balance that leaves equity exactly at maintenance (50 005.0000 minus a hair)
    q, entry, mark = Decimal("999999.9999"), Decimal("999999.9999"), Decimal("1.0001")
    maintenance = q * mark * Decimal("0.05")
    balance = maintenance - q * (mark - entry)
    shard = _one(str(balance), {"S0": (str(q), str(entry))}, {"S0": str(mark)})
    arrays = to_arrays(shard)
    m = exact_metrics(shard, shard.accounts[0])
    assert not is_liquidatable(m)  # exact: equity == maintenance, not below it
    # when
    sweep = evaluate(arrays.book, arrays.marks, arrays.imr, arrays.mmr, arrays.peak,
                     arrays.daily)
    # then: either right, or flagged for the exact re-check
    assert sweep.liquidation_ambiguous[0] or not sweep.liquidatable[0]
