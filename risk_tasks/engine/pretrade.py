"""The pre-trade decision: one order against one account snapshot, no I/O.

The checks run in the pinned order of DESIGN.md and the first failure is the answer:
emergency stop, unknown account, halted account, unknown symbol, no price, price
collar, max order notional, rate limit, insufficient margin, policy violation. Input
validation (``invalid_request``) happens before, in ``validation.validate_order``.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, localcontext
from typing import Mapping, Sequence

from risk_tasks.engine.metrics import compute_metrics, drawdown
from risk_tasks.engine.model import (
    ENGINE_CONTEXT, ZERO, Account, Mark, Metrics, Order, OrderType, Policy, Position, Reason,
    Side, SymbolSpec, TradingState, exact,
)
from risk_tasks.engine.policies import CONCENTRATION_PREFIX, INFINITY, OPERATORS, applies, evaluate
from risk_tasks.engine.positions import apply_fill, raises_margin, reduces_exposure


@dataclass(frozen=True, slots=True)
class PretradeLimits:
    """``price_stale_seconds``: oldest usable mark (seconds by feed time).
    ``rate_limit``: orders per account allowed in the rate window."""

    price_stale_seconds: float
    rate_limit: int


@dataclass(frozen=True, slots=True)
class CheckContext:
    """Everything a decision reads. ``recent_orders`` counts this order's account's
    checks in the current rate window, this one included."""

    now: float
    platform_state: TradingState
    account: Account | None
    marks: Mapping[str, Mark]
    specs: Mapping[str, SymbolSpec]
    policies: Sequence[Policy]  # enabled, highest priority first
    recent_orders: int
    limits: PretradeLimits


@dataclass(frozen=True, slots=True)
class Decision:
    approved: bool
    reason: Reason | None = None
    message: str | None = None
    violations: tuple[str, ...] = ()
    metrics: Metrics | None = None

    def to_dict(self, order_id: str | None, account_id: str | None,
                processing_time_us: int) -> dict:
        """The result of ``risk.check_order`` (DESIGN.md public contract)."""
        return {
            "order_id": order_id,
            "account_id": account_id,
            "approved": self.approved,
            "violations": list(self.violations),
            "rejection_reason": None if self.reason is None else self.reason.value,
            "message": self.message,
            "post_trade_metrics": {} if self.metrics is None else self.metrics.to_dict(),
            "processing_time_us": processing_time_us,
        }


def reject(reason: Reason, message: str, violations: Sequence[str] | None = None,
           metrics: Metrics | None = None) -> Decision:
    return Decision(False, reason, message,
                    tuple(violations) if violations is not None else (message,), metrics)


# -- PRE-TRADE CHECKS --

@exact
def decide(order: Order, ctx: CheckContext) -> Decision:
    """Approve or reject ``order`` (already validated) against ``ctx``."""
    if ctx.platform_state is TradingState.HALTED:
        return reject(Reason.EMERGENCY_STOP_ACTIVE, "trading is halted by an emergency stop")
    account = ctx.account
    if account is None:
        return reject(Reason.UNKNOWN_ACCOUNT, f"unknown account {order.account_id}")

    position = account.positions.get(order.symbol)
    delta = order.signed_quantity
    if order.reduce_only:
        delta = _reduce_only_delta(position, delta)
        if delta is None:
            return reject(Reason.INVALID_REQUEST,
                          f"reduce_only order has no opposite {order.symbol} position to reduce")
    reducing = reduces_exposure(position, delta)
    if account.status is TradingState.HALTED:
        return reject(Reason.ACCOUNT_HALTED, f"account {account.account_id} is halted")
    if not reducing:
        if account.status is TradingState.REDUCING:
            return reject(Reason.ACCOUNT_HALTED,
                          f"account {account.account_id} may only reduce exposure")
        if ctx.platform_state is TradingState.REDUCING:
            return reject(Reason.ACCOUNT_HALTED, "the platform only accepts orders that "
                                                 "reduce exposure")

    spec = ctx.specs.get(order.symbol)
    if spec is None:
        return reject(Reason.UNKNOWN_SYMBOL, f"unknown symbol {order.symbol}")
    raises = raises_margin(position, delta)
    held = [s for s, p in account.positions.items() if p.quantity and s != order.symbol]
    if raises:
        # The approval depends on every held position: their prices must be usable too.
        for symbol in held:
            if symbol not in ctx.specs:
                return reject(Reason.UNKNOWN_SYMBOL, f"held symbol {symbol} is not configured")
    stale = _stale_symbol(ctx, [order.symbol] + (held if raises else []))
    if stale is not None:
        return reject(Reason.NO_PRICE, f"no fresh price for {stale}")

    mark = ctx.marks[order.symbol].price
    if order.order_type is OrderType.LIMIT:
        fill_price = order.price
        if spec.price_collar is not None:
            distance = abs(fill_price - mark) / mark
            if distance > spec.price_collar:
                return reject(Reason.PRICE_COLLAR,
                              f"limit price {fill_price} is {float(distance):.2%} from mark "
                              f"{mark}; the collar is {float(spec.price_collar):.2%}")
    else:
        fill_price = mark
    order_notional = abs(delta) * fill_price  # a reduce-only order fills at most its clip
    if spec.max_order_notional is not None and order_notional > spec.max_order_notional:
        return reject(Reason.MAX_ORDER_NOTIONAL,
                      f"order notional {order_notional:.2f} exceeds the maximum "
                      f"{spec.max_order_notional:.2f} for {order.symbol}")
    if ctx.recent_orders > ctx.limits.rate_limit:
        return reject(Reason.RATE_LIMITED,
                      f"more than {ctx.limits.rate_limit} orders per window for account "
                      f"{account.account_id}")

    # -- POST-TRADE STATE --
    marks, specs = _pricing(ctx, account, order.symbol)
    new_position, realized = apply_fill(position, order.symbol, delta, fill_price)
    post_positions = dict(account.positions)
    post_positions[order.symbol] = new_position
    post = compute_metrics(account.balance + realized, post_positions, marks, specs,
                           account.peak_equity, account.daily_start_equity)
    violations = evaluate(post, ctx.policies, account.account_id, order.strategy_id,
                          account.max_leverage)
    described = tuple(v.describe() for v in violations)
    if not raises:
        # Reducing or closing exposure is never refused for margin or policy reasons.
        return Decision(True, None, None, described, post)

    if post.available_margin < 0:
        pre = compute_metrics(account.balance, account.positions, marks, specs,
                              account.peak_equity, account.daily_start_equity)
        need = order_notional * spec.imr
        return reject(Reason.INSUFFICIENT_MARGIN,
                      f"insufficient margin: need {need:.2f}, "
                      f"available {pre.available_margin:.2f}", metrics=post)
    blocking = [v for v in violations if v.blocking]
    if blocking:
        return reject(Reason.POLICY_VIOLATION, blocking[0].describe(), described, post)
    return Decision(True, None, None, described, post)


# -- THE COMMON CASE IN ONE PASS --

def approve_quickly(order: Order, ctx: CheckContext) -> dict | None:
    """The ``post_trade_metrics`` of a clean approval, or None: ask ``decide``.

    Most orders are approvals of an ACTIVE account with every price fresh and no policy
    violated. This decides exactly those as ``decide`` does, with the same ``Decimal``
    arithmetic in the same context, in one function: no intermediate ``Position``,
    ``Metrics``, ``Violation`` or ``Decision``. Anything else (a rejection, a warning, a
    reduce-only order, a stale or missing price or spec anywhere in the account, a
    REDUCING state) returns None, and ``decide`` gives the answer and its message. So
    when this returns a dict, it is ``decide(order, ctx).to_dict(...)["post_trade_metrics"]``
    of an approval without violations (tests/unit/test_engine_properties.py checks it).
    """
    account = ctx.account
    if (account is None or order.reduce_only or ctx.platform_state is not TradingState.ACTIVE
            or account.status is not TradingState.ACTIVE
            or ctx.recent_orders > ctx.limits.rate_limit):
        return None
    symbol = order.symbol
    specs = ctx.specs
    marks = ctx.marks
    spec = specs.get(symbol)
    mark = marks.get(symbol)
    oldest = ctx.now - ctx.limits.price_stale_seconds
    if spec is None or mark is None or mark.ts < oldest:
        return None
    positions = account.positions
    for s, p in positions.items():
        if p.quantity and s != symbol:
            m = marks.get(s)
            if m is None or m.ts < oldest or s not in specs:
                return None
    with localcontext(ENGINE_CONTEXT):
        price = mark.price
        fill = price
        if order.order_type is OrderType.LIMIT:
            fill = order.price
            if spec.price_collar is not None and abs(fill - price) / price > spec.price_collar:
                return None
        delta = order.quantity if order.side is Side.BUY else -order.quantity
        cap = spec.max_order_notional
        if cap is not None and abs(delta) * fill > cap:
            return None
        # the fill (positions.apply_fill)
        held = positions.get(symbol)
        q = held.quantity if held is not None else ZERO
        entry = held.entry_price if held is not None else ZERO
        new_q = q + delta
        realized = ZERO
        if not q or (q > 0) == (delta > 0):
            new_entry = (abs(q) * entry + abs(delta) * fill) / abs(new_q)
        else:
            realized = min(abs(q), abs(delta)) * (fill - entry) * (1 if q > 0 else -1)
            if not new_q:
                new_entry = ZERO
            elif (new_q > 0) == (q > 0):
                new_entry = entry
            else:
                new_entry = fill
        # the metrics after it (metrics.compute_metrics), positions in decide's order
        upnl = notional = margin_used = maintenance = ZERO
        by_symbol: dict[str, Decimal] = {}
        for s, p in (positions if held is not None else {**positions, symbol: None}).items():
            qq = new_q if s == symbol else p.quantity
            if not qq:
                continue
            if s == symbol:
                m, e, sp = price, new_entry, spec
            else:
                m, e, sp = marks[s].price, p.entry_price, specs[s]
            n = abs(qq) * m
            upnl += qq * (m - e)
            notional += n
            margin_used += n * sp.imr
            maintenance += n * sp.mmr
            by_symbol[s] = n
        balance = account.balance + realized
        equity = balance + upnl
        available = equity - margin_used
        raises = abs(new_q) > abs(q)
        if raises and available < 0:
            return None
        positive = equity > 0
        margin_ratio = equity / margin_used if margin_used else None
        leverage = notional / equity if positive else None
        concentration = {s: (n / equity if positive else None) for s, n in by_symbol.items()}
        daily = drawdown(account.daily_start_equity, equity)
        peak = drawdown(account.peak_equity, equity)
        # the policies (policies.evaluate): any violation, even a warning, goes to decide
        undefined_exposure = INFINITY if notional else ZERO
        for policy in ctx.policies:
            if not applies(policy, account.account_id, by_symbol, order.strategy_id):
                continue
            metric = policy.metric
            if metric == "leverage":
                value = undefined_exposure if leverage is None else leverage
            elif metric == "margin_ratio":
                value = INFINITY if margin_ratio is None else margin_ratio
            elif metric == "drawdown_daily":
                value = daily
            elif metric == "drawdown_max":
                value = peak
            else:
                s = metric[len(CONCENTRATION_PREFIX):]
                value = concentration.get(s, ZERO)
                if value is None:
                    value = undefined_exposure
            if not OPERATORS[policy.operator](value, policy.threshold):
                return None
        cap = account.max_leverage
        if cap is not None and (undefined_exposure if leverage is None else leverage) > cap:
            return None
        return {
            "equity": float(equity),
            "balance": float(balance),
            "unrealized_pnl": float(upnl),
            "notional": float(notional),
            "margin_used": float(margin_used),
            "maintenance_margin": float(maintenance),
            "available_margin": float(available),
            "margin_ratio": None if margin_ratio is None else float(margin_ratio),
            "leverage": None if leverage is None else float(leverage),
            "drawdown_daily": float(daily),
            "drawdown_max": float(peak),
            "concentration": {s: None if c is None else float(c)
                              for s, c in concentration.items()},
            "open_positions": len(by_symbol),
        }


# -- HELPERS --

def _reduce_only_delta(position: Position | None, delta: Decimal) -> Decimal | None:
    """A reduce-only order fills at most the opposite position (as exchanges do)."""
    if position is None or not position.quantity or (position.quantity > 0) == (delta > 0):
        return None
    size = min(abs(delta), abs(position.quantity))
    return size if delta > 0 else -size


def _stale_symbol(ctx: CheckContext, symbols: Sequence[str]) -> str | None:
    oldest = ctx.now - ctx.limits.price_stale_seconds
    for symbol in symbols:
        mark = ctx.marks.get(symbol)
        if mark is None or mark.ts < oldest:
            return symbol
    return None


def _pricing(ctx: CheckContext, account: Account,
             symbol: str) -> tuple[dict[str, Decimal], Mapping[str, SymbolSpec]]:
    """Marks and specs of the order's symbol and every held one.

    Only an order that does not raise margin gets here with a held symbol that lacks a
    fresh price or a spec: its last price (else its entry) is used for the post-trade
    figures, and a missing spec counts at 100 % margin, the most conservative reading.
    """
    marks = {symbol: ctx.marks[symbol].price}
    specs: Mapping[str, SymbolSpec] = ctx.specs
    for s, p in account.positions.items():
        if s in marks or not p.quantity:
            continue
        mark = ctx.marks.get(s)
        marks[s] = mark.price if mark is not None else p.entry_price
        if s not in specs:
            specs = {**specs, s: SymbolSpec(s, imr=Decimal(1), mmr=Decimal(1))}
    return marks, specs
