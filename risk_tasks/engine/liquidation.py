"""Liquidation planning (DESIGN.md): which whole positions to close, in which order."""

from __future__ import annotations

from decimal import Decimal
from typing import Mapping

from risk_tasks.engine.model import Position, SymbolSpec, exact


@exact
def plan_liquidation(
    balance: Decimal,
    positions: Mapping[str, Position],
    marks: Mapping[str, Decimal],
    specs: Mapping[str, SymbolSpec],
) -> list[str]:
    """Symbols whose whole positions to close, largest notional first.

    Closes until ``equity >= sum(remaining notional * imr)`` or nothing is left; with
    ``equity <= 0`` it closes everything. Closing at mark realises the unrealised PnL,
    so equity does not move while positions close; only the margin still needed falls.
    Ties in notional close in symbol order, so the plan is deterministic.
    """
    open_positions = [(s, p) for s, p in positions.items() if p.quantity]
    equity = balance + sum((p.quantity * (marks[s] - p.entry_price) for s, p in open_positions),
                           Decimal(0))
    by_size = sorted(open_positions, key=lambda sp: (-abs(sp[1].quantity) * marks[sp[0]], sp[0]))
    if equity <= 0:
        return [s for s, _ in by_size]
    remaining = sum((abs(p.quantity) * marks[s] * specs[s].imr for s, p in by_size), Decimal(0))
    plan = []
    for symbol, pos in by_size:
        if equity >= remaining:
            break
        plan.append(symbol)
        remaining -= abs(pos.quantity) * marks[symbol] * specs[symbol].imr
    return plan
