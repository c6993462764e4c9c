"""Plain data of the risk engine. Money, prices and quantities are ``Decimal``."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import (
    ROUND_HALF_EVEN, Context, Decimal, DivisionByZero, InvalidOperation, Overflow, localcontext,
)
from enum import Enum
from functools import wraps
from typing import Callable, Mapping, TypeVar

ZERO = Decimal(0)
ONE = Decimal(1)

# Inputs reach 1e18 with 18 decimals and products of two of them need 36 digits on each
# side of the point: 80 significant digits keep every sum and product of the formulas
# exact, whatever the caller's own Decimal context is. Quotients are rounded at 80.
ENGINE_CONTEXT = Context(prec=80, rounding=ROUND_HALF_EVEN,
                         traps=[InvalidOperation, DivisionByZero, Overflow])

F = TypeVar("F", bound=Callable)


def exact(fn: F) -> F:
    """Run an engine function in ``ENGINE_CONTEXT`` (about 1 us per call)."""

    @wraps(fn)
    def wrapper(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        with localcontext(ENGINE_CONTEXT):
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


class Side(str, Enum):
    BUY = "BUY"
    SELL = "SELL"


class OrderType(str, Enum):
    MARKET = "MARKET"
    LIMIT = "LIMIT"


class TradingState(str, Enum):
    """Trading state of the platform or of one account."""

    ACTIVE = "ACTIVE"
    REDUCING = "REDUCING"  # only orders that reduce exposure pass
    HALTED = "HALTED"  # every order is rejected


class PolicyType(str, Enum):
    HARD = "hard"  # blocks orders; counts toward the circuit breaker
    SOFT = "soft"  # warns only
    EMERGENCY = "emergency"  # blocks orders; in the monitor, halts and unwinds the account


class Reason(str, Enum):
    """Rejection reasons, in the order they are checked (first match wins)."""

    INVALID_REQUEST = "invalid_request"
    EMERGENCY_STOP_ACTIVE = "emergency_stop_active"
    UNKNOWN_ACCOUNT = "unknown_account"
    ACCOUNT_HALTED = "account_halted"
    UNKNOWN_SYMBOL = "unknown_symbol"
    NO_PRICE = "no_price"
    PRICE_COLLAR = "price_collar"
    MAX_ORDER_NOTIONAL = "max_order_notional"
    RATE_LIMITED = "rate_limited"
    INSUFFICIENT_MARGIN = "insufficient_margin"
    POLICY_VIOLATION = "policy_violation"


@dataclass(frozen=True, slots=True)
class SymbolSpec:
    """Trading rules of one symbol.

    ``imr``/``mmr``: initial and maintenance margin rates (0.10 is 10x).
    ``price_collar``: largest relative distance of a limit price from mark (None: no collar).
    ``max_order_notional``: largest order notional in quote currency (None: no cap).
    """

    symbol: str
    imr: Decimal
    mmr: Decimal
    price_collar: Decimal | None = None
    max_order_notional: Decimal | None = None


@dataclass(frozen=True, slots=True)
class Mark:
    """A mark price and the feed timestamp it carries (epoch seconds)."""

    price: Decimal
    ts: float


@dataclass(frozen=True, slots=True)
class Position:
    """A signed quantity (long > 0, short < 0) at an average entry price."""

    symbol: str
    quantity: Decimal
    entry_price: Decimal


@dataclass(frozen=True, slots=True)
class Account:
    account_id: str
    balance: Decimal
    status: TradingState = TradingState.ACTIVE
    peak_equity: Decimal = ZERO
    daily_start_equity: Decimal = ZERO
    max_leverage: Decimal | None = None
    positions: Mapping[str, Position] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Order:
    order_id: str
    account_id: str
    symbol: str
    side: Side
    quantity: Decimal
    order_type: OrderType
    price: Decimal | None = None  # LIMIT only
    strategy_id: str | None = None
    timestamp: float | None = None
    reduce_only: bool = False

    @property
    def signed_quantity(self) -> Decimal:
        return self.quantity if self.side is Side.BUY else -self.quantity


@dataclass(frozen=True, slots=True)
class Fill:
    fill_id: str
    account_id: str
    symbol: str
    side: Side
    quantity: Decimal
    price: Decimal


@dataclass(frozen=True, slots=True)
class Policy:
    """A condition that must hold: ``metric operator threshold``; violated when false."""

    name: str
    type: PolicyType
    metric: str
    operator: str
    threshold: Decimal
    scope: str = "account"  # account | symbol | strategy
    scope_id: str | None = None
    enabled: bool = True
    priority: int = 0  # higher is evaluated (and reported) first
    version: int = 1


@dataclass(frozen=True, slots=True)
class Violation:
    policy: str
    policy_type: PolicyType
    metric: str
    value: Decimal | None  # None: the metric is undefined (for example no equity)
    operator: str
    threshold: Decimal

    @property
    def blocking(self) -> bool:
        return self.policy_type is not PolicyType.SOFT

    def describe(self) -> str:
        shown = "undefined" if self.value is None else f"{float(self.value):.6g}"
        return (
            f"{self.policy} ({self.policy_type.value}): {self.metric}={shown} "
            f"violates {self.operator} {float(self.threshold):g}"
        )


@dataclass(frozen=True, slots=True)
class Metrics:
    """Risk metrics of one account, named and computed as in DESIGN.md (Formulas).

    Ratios are plain fractions (0.2 is 20 %). ``margin_ratio`` is None when no margin
    is used, ``leverage`` and the concentrations are None when equity <= 0.
    """

    equity: Decimal
    balance: Decimal
    unrealized_pnl: Decimal
    notional: Decimal
    margin_used: Decimal
    maintenance_margin: Decimal
    available_margin: Decimal
    margin_ratio: Decimal | None
    leverage: Decimal | None
    drawdown_daily: Decimal
    drawdown_max: Decimal
    concentration: Mapping[str, Decimal | None]
    open_positions: int
    notional_by_symbol: Mapping[str, Decimal] = field(default_factory=dict, compare=False)

    def to_dict(self) -> dict:
        """The metrics dict of the public contract (JSON numbers)."""
        return {
            "equity": float(self.equity),
            "balance": float(self.balance),
            "unrealized_pnl": float(self.unrealized_pnl),
            "notional": float(self.notional),
            "margin_used": float(self.margin_used),
            "maintenance_margin": float(self.maintenance_margin),
            "available_margin": float(self.available_margin),
            "margin_ratio": _opt_float(self.margin_ratio),
            "leverage": _opt_float(self.leverage),
            "drawdown_daily": float(self.drawdown_daily),
            "drawdown_max": float(self.drawdown_max),
            "concentration": {s: _opt_float(v) for s, v in self.concentration.items()},
            "open_positions": self.open_positions,
        }


def _opt_float(value: Decimal | None) -> float | None:
    return None if value is None else float(value)
