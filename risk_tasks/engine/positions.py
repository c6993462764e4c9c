"""How a fill moves a position: average entry on increase, realised PnL on reduction."""

from __future__ import annotations

from decimal import Decimal

from risk_tasks.engine.model import ZERO, Position, exact


@exact
def apply_fill(
    position: Position | None, symbol: str, signed_quantity: Decimal, price: Decimal
) -> tuple[Position, Decimal]:
    """The position after a fill of ``signed_quantity`` (buy > 0) at ``price``.

    Returns ``(new_position, realized_pnl)``. Adding to a position moves its entry to
    the quantity-weighted average; reducing realises ``closed * (price - entry)`` with
    the position's sign and keeps the entry; a fill through zero closes the old side
    at ``price`` and opens the rest there. A flat result has quantity 0 and entry 0.
    """
    q = position.quantity if position is not None else ZERO
    entry = position.entry_price if position is not None else ZERO
    dq = signed_quantity
    new_q = q + dq
    if not q or (q > 0) == (dq > 0):
        # Opening or adding on the same side.
        new_entry = (abs(q) * entry + abs(dq) * price) / abs(new_q)
        return Position(symbol, new_q, new_entry), ZERO
    closed = min(abs(q), abs(dq))
    sign = 1 if q > 0 else -1
    realized = closed * (price - entry) * sign
    if not new_q:
        return Position(symbol, ZERO, ZERO), realized
    if (new_q > 0) == (q > 0):
        return Position(symbol, new_q, entry), realized
    return Position(symbol, new_q, price), realized


def raises_margin(position: Position | None, signed_quantity: Decimal) -> bool:
    """True when a fill makes the position larger in size.

    Margin is ``|q| * mark * imr``, so an order that does not make ``|q|`` larger does
    not increase ``margin_used`` and is never refused for margin or policy reasons.
    """
    q = position.quantity if position is not None else ZERO
    return abs(q + signed_quantity) > abs(q)


def reduces_exposure(position: Position | None, signed_quantity: Decimal) -> bool:
    """True when a fill only shrinks or closes a position (no growth, no side change).

    This is what a REDUCING account or platform lets through.
    """
    q = position.quantity if position is not None else ZERO
    new_q = q + signed_quantity
    if abs(new_q) > abs(q):
        return False
    return not new_q or (new_q > 0) == (q > 0)
