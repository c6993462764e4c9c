"""Account risk metrics, exactly the formulas of DESIGN.md, in ``Decimal``.

For an account with balance ``B``, positions ``q_i`` at entry ``e_i`` and marks ``m_i``:
``notional_i = |q_i| m_i``, ``upnl_i = q_i (m_i - e_i)``, ``equity = B + sum upnl``,
``margin_used = sum notional_i imr_i``, ``maintenance = sum notional_i mmr_i``.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Mapping

from risk_tasks.engine.model import ZERO, Metrics, Position, SymbolSpec, exact


@exact
def compute_metrics(
    balance: Decimal,
    positions: Mapping[str, Position],
    marks: Mapping[str, Decimal],
    specs: Mapping[str, SymbolSpec],
    peak_equity: Decimal,
    daily_start_equity: Decimal,
) -> Metrics:
    """Metrics of an account from its balance, positions and mark prices.

    ``marks`` maps every held symbol to its mark price; ``specs`` gives margin rates.
    Flat positions (quantity 0) are ignored. Raises ``KeyError`` for a held symbol
    without a mark or a spec: callers check prices before they ask for metrics.
    """
    upnl = ZERO
    notional = ZERO
    margin_used = ZERO
    maintenance = ZERO
    by_symbol: dict[str, Decimal] = {}
    open_positions = 0
    for symbol, pos in positions.items():
        q = pos.quantity
        if not q:
            continue
        mark = marks[symbol]
        spec = specs[symbol]
        n = abs(q) * mark
        upnl += q * (mark - pos.entry_price)
        notional += n
        margin_used += n * spec.imr
        maintenance += n * spec.mmr
        by_symbol[symbol] = n
        open_positions += 1
    equity = balance + upnl
    positive_equity = equity > 0
    return Metrics(
        equity=equity,
        balance=balance,
        unrealized_pnl=upnl,
        notional=notional,
        margin_used=margin_used,
        maintenance_margin=maintenance,
        available_margin=equity - margin_used,
        margin_ratio=equity / margin_used if margin_used else None,
        leverage=notional / equity if positive_equity else None,
        drawdown_daily=drawdown(daily_start_equity, equity),
        drawdown_max=drawdown(peak_equity, equity),
        concentration={
            s: (n / equity if positive_equity else None) for s, n in by_symbol.items()
        },
        open_positions=open_positions,
        notional_by_symbol=by_symbol,
    )


def drawdown(reference: Decimal, equity: Decimal) -> Decimal:
    """``max(0, (reference - equity) / reference)``; 0 when the reference is not positive."""
    if reference <= 0:
        return ZERO
    dd = (reference - equity) / reference
    return dd if dd > 0 else ZERO


def is_liquidatable(metrics: Metrics) -> bool:
    """DESIGN.md: an account with positions is liquidatable when equity < maintenance."""
    return metrics.open_positions > 0 and metrics.equity < metrics.maintenance_margin


@exact
def liquidation_price(
    symbol: str,
    balance: Decimal,
    positions: Mapping[str, Position],
    marks: Mapping[str, Decimal],
    specs: Mapping[str, SymbolSpec],
) -> Decimal | None:
    """Mark of ``symbol`` at which equity falls to maintenance, other marks held fixed.

    Solves ``C + q (m - e) = M + |q| m mmr`` for ``m``, where ``C`` is the balance plus
    the PnL of the other positions and ``M`` their maintenance. None when no positive
    price satisfies it (the position alone cannot bring the account to liquidation).
    """
    pos = positions.get(symbol)
    if pos is None or not pos.quantity:
        return None
    other_equity = balance
    other_maintenance = ZERO
    for s, p in positions.items():
        if s == symbol or not p.quantity:
            continue
        mark = marks[s]
        other_equity += p.quantity * (mark - p.entry_price)
        other_maintenance += abs(p.quantity) * mark * specs[s].mmr
    q = pos.quantity
    denominator = q - abs(q) * specs[symbol].mmr
    if not denominator:
        return None
    price = (other_maintenance - other_equity + q * pos.entry_price) / denominator
    return price if price > 0 else None
