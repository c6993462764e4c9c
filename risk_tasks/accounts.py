"""The metrics view of one account (``risk.get_risk_metrics``, ``riskctl accounts show``)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from risk_tasks.engine.metrics import compute_metrics, liquidation_price
from risk_tasks.engine.model import SymbolSpec
from risk_tasks.engine.validation import InvalidInput, identifier
from risk_tasks.state.store import StateStore


def account_metrics(store: StateStore, account_id: Any) -> dict[str, Any]:
    """Metrics of an account marked at the current prices, exactly (``Decimal``).

    Adds ``account_id``, ``status``, ``as_of`` (epoch s) and ``positions`` (each with its
    liquidation price) to the metrics dict. A held symbol without a fresh price is
    marked at its last price (or its entry without one) and listed in ``stale_prices``.
    An unknown or malformed id gets ``{"error": ..., "message": ...}``, never an exception.
    """
    try:
        account_id = identifier({"account_id": account_id}, "account_id")
    except InvalidInput as exc:
        return {"account_id": None, "error": "invalid_request", "message": str(exc)}
    account, _ = store.read_account(account_id)
    if account is None:
        return {"account_id": account_id, "error": "unknown_account",
                "message": f"unknown account {account_id}"}
    config = store.current_config()
    all_marks = store.marks()
    now = store.clock.time()
    oldest = now - store.settings.price_stale_seconds
    marks: dict[str, Decimal] = {}
    specs: dict[str, SymbolSpec] = dict(config.specs)
    stale = []
    for symbol, pos in account.positions.items():
        mark = all_marks.get(symbol)
        marks[symbol] = mark.price if mark is not None else pos.entry_price
        if mark is None or mark.ts < oldest:
            stale.append(symbol)
        if symbol not in specs:
            specs[symbol] = SymbolSpec(symbol, Decimal(1), Decimal(1))
    metrics = compute_metrics(account.balance, account.positions, marks, specs,
                              account.peak_equity, account.daily_start_equity)
    positions = []
    for symbol, pos in sorted(account.positions.items()):
        if not pos.quantity:
            continue
        mark = marks[symbol]
        liq = liquidation_price(symbol, account.balance, account.positions, marks, specs)
        positions.append({
            "symbol": symbol,
            "quantity": float(pos.quantity),
            "entry_price": float(pos.entry_price),
            "mark_price": float(mark),
            "notional": float(abs(pos.quantity) * mark),
            "unrealized_pnl": float(pos.quantity * (mark - pos.entry_price)),
            "liquidation_price": None if liq is None else float(liq),
        })
    out = metrics.to_dict()
    out.update(
        account_id=account_id,
        status=account.status.value,
        as_of=now,
        positions=positions,
        peak_equity=float(account.peak_equity),
        daily_start_equity=float(account.daily_start_equity),
        stale_prices=stale,
    )
    return out
