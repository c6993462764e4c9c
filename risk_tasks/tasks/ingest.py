"""Ingest tasks (queue ``ingest``): prices, accounts and fills into the hot state.

Idempotent (fills per ``fill_id``, accounts by value, prices by timestamp) and
``acks_late``, so a redelivery after a worker died applies nothing twice. Bad input is
answered with ``{"ok": false, "error": ..., "field": ...}`` once and never retried.
"""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any

from risk_tasks.engine.validation import (
    InvalidInput, validate_account, validate_fill, validate_prices,
)
from risk_tasks.logs import log_event
from risk_tasks.metrics import PRICE_TICKS
from risk_tasks.runtime import runtime
from risk_tasks.state.store import StateError
from risk_tasks.tasks.base import risk_task

log = logging.getLogger(__name__)


def refused(kind: str, exc: InvalidInput | StateError, **ids: Any) -> dict:
    field = getattr(exc, "field", None)
    code = getattr(exc, "code", "invalid_request")
    log_event(log, f"{kind} refused", logging.WARNING, error=str(exc), field=field, **ids)
    return {"ok": False, "error": str(exc), "code": code, "field": field}


@risk_task("risk.ingest_prices", ignore_result=False, acks_late=True)
def ingest_prices(prices: Any, ts: Any) -> dict:
    """Mark prices ``{symbol: price}`` stamped with the feed time ``ts`` (epoch s)."""
    rt = runtime()
    try:
        parsed, stamp = validate_prices(prices, ts)
    except InvalidInput as exc:
        return refused("prices", exc)
    limit = rt.clock.time() + rt.settings.price_future_tolerance_seconds
    if stamp > limit:
        return refused("prices", InvalidInput("ts", "is in the future"))
    counts = rt.store.ingest_prices(parsed, stamp)
    for outcome, n in counts.items():
        if n:
            PRICE_TICKS.labels(outcome).inc(n)
    if counts["held"]:
        log_event(log, "price jump held for confirmation", logging.WARNING,
                  held=counts["held"], ts=stamp)
    return {"ok": True, **counts}


@risk_task("risk.upsert_account", ignore_result=False, acks_late=True)
def upsert_account(account: Any) -> dict:
    try:
        parsed = validate_account(account)
    except InvalidInput as exc:
        return refused("account", exc)
    return runtime().store.upsert_account(parsed)


@risk_task("risk.apply_fill", ignore_result=False, acks_late=True)
def apply_fill(fill: Any) -> dict:
    try:
        parsed = validate_fill(fill)
        return runtime().store.apply_fill(parsed)
    except (InvalidInput, StateError) as exc:
        ids = {k: fill.get(k) for k in ("fill_id", "account_id")} if isinstance(fill, dict) else {}
        return refused("fill", exc, **{k: v for k, v in ids.items() if isinstance(v, str)})


__all__ = ["Decimal"]
