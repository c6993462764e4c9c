"""Small builders of engine data for the unit tests (plain data, no I/O)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Iterable, Mapping, Sequence

from risk_tasks.engine.model import (
    Account, Mark, Order, OrderType, Policy, PolicyType, Position, Reason, Side,
    SymbolSpec, TradingState,
)
from risk_tasks.engine.pretrade import CheckContext, Decision, PretradeLimits, decide
from risk_tasks.engine.validation import InvalidInput, validate_order

NOW = 1_700_000_000.0
STALE_SECONDS = 5.0
RATE_LIMIT = 10


def D(value: Any) -> Decimal:
    return Decimal(str(value))


def spec(symbol: str = "BTC", imr: Any = "0.10", mmr: Any = "0.05", collar: Any = None,
         max_notional: Any = None) -> SymbolSpec:
    return SymbolSpec(symbol, D(imr), D(mmr),
                      None if collar is None else D(collar),
                      None if max_notional is None else D(max_notional))


def position(symbol: str, quantity: Any, entry: Any) -> Position:
    return Position(symbol, D(quantity), D(entry))


def account(balance: Any = 100_000, positions: Iterable[Position] = (),
            status: TradingState = TradingState.ACTIVE, peak_equity: Any = 0,
            daily_start_equity: Any = 0, max_leverage: Any = None,
            account_id: str = "acct-1") -> Account:
    return Account(
        account_id=account_id,
        balance=D(balance),
        status=status,
        peak_equity=D(peak_equity),
        daily_start_equity=D(daily_start_equity),
        max_leverage=None if max_leverage is None else D(max_leverage),
        positions={p.symbol: p for p in positions},
    )


def order(side: str = "BUY", quantity: Any = 1, symbol: str = "BTC",
          price: Any = None, reduce_only: bool = False, strategy_id: str | None = None,
          account_id: str = "acct-1", order_id: str = "ord-1") -> Order:
    return Order(
        order_id=order_id,
        account_id=account_id,
        symbol=symbol,
        side=Side(side),
        quantity=D(quantity),
        order_type=OrderType.MARKET if price is None else OrderType.LIMIT,
        price=None if price is None else D(price),
        strategy_id=strategy_id,
        reduce_only=reduce_only,
    )


def policy(name: str, metric: str, operator: str, threshold: Any,
           type: PolicyType = PolicyType.HARD, scope: str = "account",
           scope_id: str | None = None, priority: int = 0, enabled: bool = True) -> Policy:
    return Policy(name, type, metric, operator, D(threshold), scope=scope, scope_id=scope_id,
                  enabled=enabled, priority=priority)


def context(acct: Account | None, *, marks: Mapping[str, Any] | None = None,
            specs: Sequence[SymbolSpec] | None = None, policies: Sequence[Policy] = (),
            platform: TradingState = TradingState.ACTIVE, recent_orders: int = 1,
            mark_ts: Mapping[str, float] | None = None, now: float = NOW,
            stale_seconds: float = STALE_SECONDS, rate_limit: int = RATE_LIMIT) -> CheckContext:
    marks = {"BTC": 100} if marks is None else marks
    specs = [spec("BTC")] if specs is None else specs
    mark_ts = mark_ts or {}
    return CheckContext(
        now=now,
        platform_state=platform,
        account=acct,
        marks={s: Mark(D(m), mark_ts.get(s, now)) for s, m in marks.items()},
        specs={sp.symbol: sp for sp in specs},
        policies=tuple(policies),
        recent_orders=recent_orders,
        limits=PretradeLimits(stale_seconds, rate_limit),
    )


def check(raw: Any, ctx: CheckContext) -> Decision:
    """The pre-trade pipeline as the task runs it: validate, then decide."""
    try:
        validated = validate_order(raw)
    except InvalidInput as exc:
        return Decision(False, Reason.INVALID_REQUEST, str(exc), (str(exc),))
    return decide(validated, ctx)


def violation_names(decision: Decision) -> set[str]:
    """Policy names of the violations a decision lists (``describe`` starts with the name)."""
    return {v.split(" (", 1)[0] for v in decision.violations}
