"""An independent reference of the DESIGN.md formulas, in exact rationals.

Written from DESIGN.md ("Formulas (pinned)", "Liquidation", "Policies"), not from the
engine, so that the property tests compare two implementations of one contract.
Every number is a ``fractions.Fraction``: no rounding anywhere, so a difference between
the engine (``Decimal``, 28 significant digits) and this module is either the engine's
rounding, bounded by the tests, or a bug.

Where DESIGN.md is silent the engine's documented choice is followed and marked
"(engine choice)": undefined ratios are None, a drawdown against a reference that is
not positive is 0, liquidation ties close in symbol order.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Mapping, Optional

F = Fraction
ZERO = Fraction(0)


def fr(value: Decimal | int | str | Fraction) -> Fraction:
    """An exact rational of a Decimal (or int, str, Fraction)."""
    return Fraction(value)


@dataclass(frozen=True)
class Pos:
    """A signed quantity (long > 0) at an average entry price."""

    quantity: Fraction
    entry: Fraction


@dataclass(frozen=True)
class Rates:
    imr: Fraction
    mmr: Fraction


@dataclass(frozen=True)
class RefMetrics:
    equity: Fraction
    balance: Fraction
    unrealized_pnl: Fraction
    notional: Fraction
    margin_used: Fraction
    maintenance_margin: Fraction
    available_margin: Fraction
    margin_ratio: Optional[Fraction]
    leverage: Optional[Fraction]
    drawdown_daily: Fraction
    drawdown_max: Fraction
    concentration: dict[str, Optional[Fraction]]
    open_positions: int
    notional_by_symbol: dict[str, Fraction]


# -- FORMULAS --

def notional(q: Fraction, mark: Fraction) -> Fraction:
    """``notional_i = |q_i| * m_i``."""
    return abs(q) * mark


def upnl(q: Fraction, mark: Fraction, entry: Fraction) -> Fraction:
    """``upnl_i = q_i * (m_i - e_i)``."""
    return q * (mark - entry)


def _ratio_drawdown(reference: Fraction, equity: Fraction) -> Fraction:
    # max(0, (ref - equity) / ref); 0 when the reference is not positive (engine choice).
    if reference <= 0:
        return ZERO
    return max(ZERO, (reference - equity) / reference)


def metrics(
    balance: Fraction,
    positions: Mapping[str, Pos],
    marks: Mapping[str, Fraction],
    rates: Mapping[str, Rates],
    peak_equity: Fraction = ZERO,
    daily_start_equity: Fraction = ZERO,
) -> RefMetrics:
    """Every metric of DESIGN.md for one account. Flat positions count for nothing."""
    held = {s: p for s, p in positions.items() if p.quantity != 0}
    by_symbol = {s: notional(p.quantity, marks[s]) for s, p in held.items()}
    total_upnl = sum((upnl(p.quantity, marks[s], p.entry) for s, p in held.items()), ZERO)
    equity = balance + total_upnl
    total_notional = sum(by_symbol.values(), ZERO)
    margin_used = sum((by_symbol[s] * rates[s].imr for s in held), ZERO)
    maintenance = sum((by_symbol[s] * rates[s].mmr for s in held), ZERO)
    return RefMetrics(
        equity=equity,
        balance=balance,
        unrealized_pnl=total_upnl,
        notional=total_notional,
        margin_used=margin_used,
        maintenance_margin=maintenance,
        available_margin=equity - margin_used,
        margin_ratio=None if margin_used == 0 else equity / margin_used,
        leverage=None if equity <= 0 else total_notional / equity,
        drawdown_daily=_ratio_drawdown(daily_start_equity, equity),
        drawdown_max=_ratio_drawdown(peak_equity, equity),
        # undefined (None) when equity <= 0, like leverage (engine choice)
        concentration={s: (n / equity if equity > 0 else None) for s, n in by_symbol.items()},
        open_positions=len(held),
        notional_by_symbol=by_symbol,
    )


# -- POSITIONS --

def _sign(x: Fraction) -> int:
    return (x > 0) - (x < 0)


def apply_fill(pos: Pos, dq: Fraction, price: Fraction) -> tuple[Pos, Fraction]:
    """The position after a fill of signed ``dq`` at ``price``, and the realised PnL.

    Split the fill into the part that closes existing exposure and the part that opens
    new exposure: the closing part realises ``closed * (price - entry)`` with the sign
    of the position; the opening part is averaged into the entry (or starts a new one
    at ``price`` once the old side is gone). A flat position has entry 0.
    """
    q, e = pos.quantity, pos.entry
    closing = ZERO
    if q != 0 and _sign(dq) == -_sign(q):
        closing = -_sign(q) * min(abs(dq), abs(q))  # signed, opposite to q
    opening = dq - closing
    realized = -closing * (price - e)
    q1 = q + closing
    e1 = e if q1 != 0 else ZERO
    if opening == 0:
        return Pos(q1, e1), realized
    q2 = q1 + opening
    # q1 is 0 or has the sign of ``opening``: a signed weighted average is exact.
    e2 = (q1 * e1 + opening * price) / q2
    return Pos(q2, e2), realized


# -- LIQUIDATION --

def liquidation_plan(
    balance: Fraction,
    positions: Mapping[str, Pos],
    marks: Mapping[str, Fraction],
    rates: Mapping[str, Rates],
) -> list[str]:
    """Symbols to close whole, largest notional first (ties: symbol order, engine choice).

    Close until ``equity >= sum(remaining notional * imr)`` or nothing is left; with
    ``equity <= 0`` close everything. Positions close at mark, so equity stays put.
    """
    held = {s: p for s, p in positions.items() if p.quantity != 0}
    m = metrics(balance, held, marks, rates)
    order = sorted(held, key=lambda s: (-m.notional_by_symbol[s], s))
    if m.equity <= 0:
        return order
    plan: list[str] = []
    remaining = list(order)

    def required() -> Fraction:
        return sum((m.notional_by_symbol[s] * rates[s].imr for s in remaining), ZERO)

    while remaining and m.equity < required():
        plan.append(remaining.pop(0))
    return plan


def equity_minus_maintenance(
    symbol: str, mark: Fraction, balance: Fraction, positions: Mapping[str, Pos],
    marks: Mapping[str, Fraction], rates: Mapping[str, Rates],
) -> Fraction:
    """``equity - maintenance`` with the mark of ``symbol`` set to ``mark``."""
    moved = dict(marks)
    moved[symbol] = mark
    m = metrics(balance, positions, moved, rates)
    return m.equity - m.maintenance_margin


def liquidation_price(
    symbol: str, balance: Fraction, positions: Mapping[str, Pos],
    marks: Mapping[str, Fraction], rates: Mapping[str, Rates],
) -> Optional[Fraction]:
    """The positive mark of ``symbol`` at which ``equity == maintenance``, others fixed.

    ``equity - maintenance`` is linear in that mark; read it at 0 and 1 and solve.
    None when the position is flat, the line is flat, or the root is not positive.
    """
    pos = positions.get(symbol)
    if pos is None or pos.quantity == 0:
        return None
    at0 = equity_minus_maintenance(symbol, ZERO, balance, positions, marks, rates)
    at1 = equity_minus_maintenance(symbol, F(1), balance, positions, marks, rates)
    slope = at1 - at0
    if slope == 0:
        return None
    root = -at0 / slope
    return root if root > 0 else None


# -- POLICIES --

INF = float("inf")


def policy_value(m: RefMetrics, metric: str) -> Fraction | float:
    """The value a policy compares; undefined metrics read as the limit they stand for
    (policies.py docstring): no margin -> margin_ratio +inf; equity <= 0 -> leverage and
    held concentrations +inf with exposure, 0 without; a symbol not held -> 0."""
    if metric == "margin_ratio":
        return INF if m.margin_ratio is None else m.margin_ratio
    if metric == "drawdown_daily":
        return m.drawdown_daily
    if metric == "drawdown_max":
        return m.drawdown_max
    if metric == "leverage":
        if m.leverage is not None:
            return m.leverage
        return INF if m.notional else ZERO
    assert metric.startswith("concentration_")
    symbol = metric[len("concentration_"):]
    if symbol not in m.concentration:
        return ZERO
    value = m.concentration[symbol]
    if value is not None:
        return value
    return INF if m.notional else ZERO


HOLDS = {
    "less_than": lambda a, b: a < b,
    "less_than_or_equal": lambda a, b: a <= b,
    "greater_than": lambda a, b: a > b,
    "greater_than_or_equal": lambda a, b: a >= b,
    "equal": lambda a, b: a == b,
}


def policy_holds(m: RefMetrics, metric: str, operator: str, threshold: Fraction) -> bool:
    """A policy states the condition that must hold; it is violated when this is False."""
    return HOLDS[operator](policy_value(m, metric), threshold)
