"""Input validation at the boundary: raw JSON in, engine data out, or ``InvalidInput``.

Every check names the field it refuses. Numbers may arrive as JSON numbers or decimal
strings; booleans, NaN, infinities and values outside sane bounds are refused. Unknown
fields are refused too: a misspelt ``reduceOnly`` must not silently do nothing.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation
from typing import Any, Mapping

from risk_tasks.engine.model import (
    Account, Fill, Order, OrderType, Policy, PolicyType, Side, SymbolSpec, TradingState,
)
from risk_tasks.engine.policies import OPERATORS, SCOPES, is_known_metric

MAX_ID_LENGTH = 128
MAX_SYMBOL_LENGTH = 32
MAX_QUANTITY = Decimal("1e12")
MAX_PRICE = Decimal("1e12")
MAX_MONEY = Decimal("1e18")
MIN_EXPONENT = -18  # at most 18 decimal places
MAX_PRICES_PER_TICK = 10_000
# Plain ASCII decimals only: Decimal() itself would also take "1_000", "NaN" or
# Arabic-Indic digits, none of which belongs in an order.
_DECIMAL_TEXT = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d{1,4})?", re.ASCII)

ORDER_FIELDS = frozenset({
    "order_id", "account_id", "symbol", "side", "quantity", "price", "order_type",
    "strategy_id", "timestamp", "reduce_only",
})
ACCOUNT_FIELDS = frozenset({
    "account_id", "balance", "status", "peak_equity", "daily_start_equity", "max_leverage",
})
FILL_FIELDS = frozenset({"fill_id", "account_id", "symbol", "side", "quantity", "price"})
SYMBOL_FIELDS = frozenset({"symbol", "imr", "mmr", "price_collar", "max_order_notional"})
POLICY_FIELDS = frozenset({
    "name", "type", "metric", "operator", "threshold", "scope", "scope_id", "enabled",
    "priority", "version",
})


class InvalidInput(ValueError):
    """Input that cannot be used; ``field`` names the offending field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


# -- PRIMITIVES --

def require_mapping(raw: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        raise InvalidInput(what, f"must be a JSON object, got {type(raw).__name__}")
    return raw


def reject_unknown(raw: Mapping[str, Any], allowed: frozenset[str], ignore: frozenset[str] = frozenset()) -> None:
    for key in raw:
        if not isinstance(key, str):
            raise InvalidInput("<key>", f"field names must be strings, got {type(key).__name__}")
        if key not in allowed and key not in ignore:
            raise InvalidInput(key[:64], "unknown field")


def identifier(raw: Mapping[str, Any], field: str, *, required: bool = True,
               max_length: int = MAX_ID_LENGTH) -> str | None:
    value = raw.get(field)
    if value is None:
        if required:
            raise InvalidInput(field, "is required")
        return None
    if not isinstance(value, str):
        raise InvalidInput(field, f"must be a string, got {type(value).__name__}")
    if not value or len(value) > max_length:
        raise InvalidInput(field, f"must be 1 to {max_length} characters")
    if not value.isprintable() or value != value.strip():
        raise InvalidInput(field, "must be printable with no surrounding spaces")
    return value


def decimal_value(raw: Mapping[str, Any], field: str, *, required: bool = True,
                  positive: bool = False, non_negative: bool = False,
                  maximum: Decimal = MAX_MONEY, allow_negative: bool = True) -> Decimal | None:
    value = raw.get(field)
    if value is None:
        if required:
            raise InvalidInput(field, "is required")
        return None
    return to_decimal(value, field, positive=positive, non_negative=non_negative,
                      maximum=maximum, allow_negative=allow_negative)


def to_decimal(value: Any, field: str, *, positive: bool = False, non_negative: bool = False,
               maximum: Decimal = MAX_MONEY, allow_negative: bool = True) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise InvalidInput(field, f"must be a number, got {type(value).__name__}")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidInput(field, "must be a finite number")
        number = Decimal(repr(value))
    elif isinstance(value, int):
        if abs(value) > maximum:
            raise InvalidInput(field, f"must be at most {maximum} in size")
        number = Decimal(value)
    else:
        if len(value) > 64:
            raise InvalidInput(field, "is too long for a number")
        text = value.strip()
        if not _DECIMAL_TEXT.fullmatch(text):
            raise InvalidInput(field, f"is not a plain decimal number: {value[:32]!r}")
        number = Decimal(text)
    # Compare magnitudes by exponent first: abs() of a number beyond the context's range
    # would raise instead of answering.
    if number and number.adjusted() > maximum.adjusted() + 1:
        raise InvalidInput(field, f"must be at most {maximum} in size")
    if abs(number) > maximum:
        raise InvalidInput(field, f"must be at most {maximum} in size")
    if number and number.normalize().as_tuple().exponent < MIN_EXPONENT:
        raise InvalidInput(field, f"has more than {-MIN_EXPONENT} decimal places")
    if positive and number <= 0:
        raise InvalidInput(field, "must be greater than 0")
    if non_negative and number < 0:
        raise InvalidInput(field, "must not be negative")
    if not allow_negative and number < 0:
        raise InvalidInput(field, "must not be negative")
    return number


def enum_value(raw: Mapping[str, Any], field: str, enum: type, *, required: bool = True,
               default: Any = None) -> Any:
    value = raw.get(field)
    if value is None:
        if required:
            raise InvalidInput(field, "is required")
        return default
    if not isinstance(value, str):
        raise InvalidInput(field, f"must be a string, got {type(value).__name__}")
    try:
        return enum(value)
    except ValueError:
        allowed = "|".join(m.value for m in enum)
        raise InvalidInput(field, f"must be one of {allowed}, got {value[:32]!r}") from None


def boolean(raw: Mapping[str, Any], field: str, default: bool) -> bool:
    value = raw.get(field)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise InvalidInput(field, f"must be true or false, got {type(value).__name__}")
    return value


def timestamp(raw: Mapping[str, Any], field: str, *, required: bool = False) -> float | None:
    value = raw.get(field)
    if value is None:
        if required:
            raise InvalidInput(field, "is required")
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidInput(field, f"must be epoch seconds (a number), got {type(value).__name__}")
    if isinstance(value, int) and abs(value) > 10**12:
        raise InvalidInput(field, "must be epoch seconds between 1970 and 3000")
    ts = float(value)
    if not math.isfinite(ts) or ts < 0 or ts > 32503680000:  # year 3000
        raise InvalidInput(field, "must be epoch seconds between 1970 and 3000")
    return ts


# -- PUBLIC SHAPES --

def validate_order(raw: Any) -> Order:
    """The order of ``risk.check_order``, or ``InvalidInput`` naming the first bad field."""
    raw = require_mapping(raw, "order")
    reject_unknown(raw, ORDER_FIELDS)
    order_id = identifier(raw, "order_id")
    account_id = identifier(raw, "account_id")
    symbol = identifier(raw, "symbol", max_length=MAX_SYMBOL_LENGTH)
    side = enum_value(raw, "side", Side)
    order_type = enum_value(raw, "order_type", OrderType)
    quantity = decimal_value(raw, "quantity", positive=True, maximum=MAX_QUANTITY)
    price = decimal_value(raw, "price", required=False, non_negative=True, maximum=MAX_PRICE)
    if order_type is OrderType.LIMIT:
        if price is None or price <= 0:
            raise InvalidInput("price", "must be greater than 0 for a LIMIT order")
    elif price:
        raise InvalidInput("price", "must be 0 or absent for a MARKET order")
    else:
        price = None
    return Order(
        order_id=order_id,
        account_id=account_id,
        symbol=symbol,
        side=side,
        quantity=quantity,
        order_type=order_type,
        price=price,
        strategy_id=identifier(raw, "strategy_id", required=False),
        timestamp=timestamp(raw, "timestamp"),
        reduce_only=boolean(raw, "reduce_only", False),
    )


def validate_account(raw: Any) -> dict[str, Any]:
    """Fields of an account upsert that are present, parsed (``account_id`` always)."""
    raw = require_mapping(raw, "account")
    reject_unknown(raw, ACCOUNT_FIELDS, ignore=frozenset({"type"}))
    parsed: dict[str, Any] = {
        "account_id": identifier(raw, "account_id"),
        "balance": decimal_value(raw, "balance"),
    }
    if raw.get("status") is not None:
        parsed["status"] = enum_value(raw, "status", TradingState)
    for name in ("peak_equity", "daily_start_equity"):
        if raw.get(name) is not None:
            parsed[name] = decimal_value(raw, name, non_negative=True)
    if raw.get("max_leverage") is not None:
        parsed["max_leverage"] = decimal_value(raw, "max_leverage", positive=True,
                                               maximum=Decimal(10_000))
    return parsed


def validate_fill(raw: Any) -> Fill:
    raw = require_mapping(raw, "fill")
    reject_unknown(raw, FILL_FIELDS, ignore=frozenset({"type"}))
    return Fill(
        fill_id=identifier(raw, "fill_id"),
        account_id=identifier(raw, "account_id"),
        symbol=identifier(raw, "symbol", max_length=MAX_SYMBOL_LENGTH),
        side=enum_value(raw, "side", Side),
        quantity=decimal_value(raw, "quantity", positive=True, maximum=MAX_QUANTITY),
        price=decimal_value(raw, "price", positive=True, maximum=MAX_PRICE),
    )


def validate_prices(prices: Any, ts: Any) -> tuple[dict[str, Decimal], float]:
    """``{symbol: mark}`` and its feed timestamp (epoch seconds)."""
    prices = require_mapping(prices, "prices")
    if len(prices) > MAX_PRICES_PER_TICK:
        raise InvalidInput("prices", f"at most {MAX_PRICES_PER_TICK} symbols per tick")
    stamp = timestamp({"ts": ts}, "ts", required=True)
    parsed = {}
    for symbol, mark in prices.items():
        sym = identifier({"symbol": symbol}, "symbol", max_length=MAX_SYMBOL_LENGTH)
        parsed[sym] = to_decimal(mark, f"prices.{sym}", positive=True, maximum=MAX_PRICE)
    return parsed, stamp


def validate_symbol(raw: Any, default_imr: Decimal, default_mmr: Decimal) -> SymbolSpec:
    raw = require_mapping(raw, "symbol")
    reject_unknown(raw, SYMBOL_FIELDS, ignore=frozenset({"type"}))
    imr = decimal_value(raw, "imr", required=False, positive=True, maximum=Decimal(1))
    mmr = decimal_value(raw, "mmr", required=False, positive=True, maximum=Decimal(1))
    imr = default_imr if imr is None else imr
    mmr = default_mmr if mmr is None else mmr
    if mmr > imr:
        raise InvalidInput("mmr", "must not exceed imr")
    return SymbolSpec(
        symbol=identifier(raw, "symbol", max_length=MAX_SYMBOL_LENGTH),
        imr=imr,
        mmr=mmr,
        price_collar=decimal_value(raw, "price_collar", required=False, positive=True,
                                   maximum=Decimal(100)),
        max_order_notional=decimal_value(raw, "max_order_notional", required=False,
                                         positive=True),
    )


def validate_policy(raw: Any) -> Policy:
    raw = require_mapping(raw, "policy")
    reject_unknown(raw, POLICY_FIELDS, ignore=frozenset({"id"}))
    name = identifier(raw, "name", max_length=255)
    ptype = enum_value(raw, "type", PolicyType)
    metric = identifier(raw, "metric", max_length=64)
    if not is_known_metric(metric):
        raise InvalidInput("metric", "must be leverage, margin_ratio, drawdown_daily, "
                                     "drawdown_max or concentration_<SYMBOL>")
    operator = identifier(raw, "operator", max_length=32)
    if operator not in OPERATORS:
        raise InvalidInput("operator", f"must be one of {'|'.join(OPERATORS)}")
    scope = raw.get("scope", "account")
    if scope not in SCOPES:
        raise InvalidInput("scope", f"must be one of {'|'.join(SCOPES)}")
    scope_id = identifier(raw, "scope_id", required=False)
    if scope in ("symbol", "strategy") and not scope_id:
        raise InvalidInput("scope_id", f"is required for scope {scope}")
    priority = raw.get("priority", 0)
    version = raw.get("version", 1)
    for fname, value in (("priority", priority), ("version", version)):
        if isinstance(value, bool) or not isinstance(value, int) or abs(value) > 1_000_000_000:
            raise InvalidInput(fname, "must be an integer")
    return Policy(
        name=name, type=ptype, metric=metric, operator=operator,
        threshold=decimal_value(raw, "threshold"), scope=scope, scope_id=scope_id,
        enabled=boolean(raw, "enabled", True), priority=priority, version=version,
    )
