"""Decoding of Redis replies (bytes) into engine data, and encoding back."""

from __future__ import annotations

import math
import struct
from datetime import datetime, timezone
from decimal import Decimal
from typing import Iterable, Mapping

import orjson

from risk_tasks.engine.model import (
    ZERO, Account, Mark, Policy, PolicyType, Position, SymbolSpec, TradingState,
)

_DOUBLE = struct.Struct("<d")


# The account fields a pre-trade check reads, in the order check_read.lua's HMGET
# returns them (every account has a balance: without one it does not exist).
CHECK_FIELDS = (b"balance", b"status", b"peak_equity", b"daily_start_equity",
                b"max_leverage", b"shard", b"slot")


def check_fields(values: list) -> dict[bytes, bytes]:
    """check_read.lua's account values as a dict of the fields that are set."""
    return {k: v for k, v in zip(CHECK_FIELDS, values) if v is not None}


def pairs(flat: list) -> dict[bytes, bytes]:
    """A flat ``HGETALL`` reply as a dict."""
    it = iter(flat)
    return dict(zip(it, it))


def text(value: bytes | str | None) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else value


class _Memo(dict):
    """Decoded values by their raw bytes. Prices move once per feed tick and positions
    on fills, while every check reads them: parsing each distinct value once saves most
    of the decoding. Cleared when it grows past ``limit`` entries."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def remember(self, key: object, value: object) -> None:
        if len(self) >= self.limit:
            self.clear()
        self[key] = value


_positions = _Memo(200_000)
_marks = _Memo(20_000)


def decode_position(symbol: str, raw: bytes) -> Position:
    key = (symbol, raw)
    found = _positions.get(key)
    if found is None:
        quantity, entry = raw.split(b"|", 1)
        found = Position(symbol, Decimal(quantity.decode()), Decimal(entry.decode()))
        _positions.remember(key, found)
    return found


def encode_position(position: Position) -> str:
    return f"{position.quantity}|{position.entry_price}"


def decode_positions(flat: Iterable[bytes] | Mapping[bytes, bytes]) -> dict[str, Position]:
    items = flat.items() if isinstance(flat, Mapping) else pairs(list(flat)).items()
    result = {}
    for sym, raw in items:
        symbol = sym.decode()
        result[symbol] = decode_position(symbol, raw)
    return result


def decode_mark(raw: bytes | None) -> Mark | None:
    if not raw:
        return None
    found = _marks.get(raw)
    if found is None:
        price, ts = raw.split(b"|", 1)
        found = Mark(Decimal(price.decode()), float(ts))
        _marks.remember(raw, found)
    return found


def decode_slot(raw: bytes | None) -> float | None:
    """A float64 slot of a monitor blob; None when absent or unset (NaN)."""
    if not raw or len(raw) != 8:
        return None
    value = _DOUBLE.unpack(raw)[0]
    return None if math.isnan(value) else value


_day_cache: list = [-1, ""]


def day_id(ts: float) -> str:
    """The UTC day of an epoch timestamp, as ``YYYYMMDD`` (memoised per day: the
    pre-trade path asks for it on every check)."""
    day = int(ts // 86400)
    if day != _day_cache[0]:
        _day_cache[1] = datetime.fromtimestamp(day * 86400, tz=timezone.utc).strftime("%Y%m%d")
        _day_cache[0] = day
    return _day_cache[1]


def decode_account(
    account_id: str,
    fields: Mapping[bytes, bytes],
    positions: Mapping[str, Position],
    hwm: float | None = None,
    day_start: float | None = None,
    day_start_valid: bool = False,
) -> Account:
    """An account from its hash; ``hwm``/``day_start`` are the monitor's slots.

    The peak is the larger of the stored one and the monitor's high-water mark; the
    day-start equity is the monitor's once it has reset it for the current UTC day.
    """
    peak = Decimal(fields.get(b"peak_equity", b"0").decode())
    if hwm is not None:
        monitor_peak = Decimal(repr(hwm))
        if monitor_peak > peak:
            peak = monitor_peak
    if day_start_valid and day_start is not None:
        daily = Decimal(repr(day_start))
    else:
        daily = Decimal(fields.get(b"daily_start_equity", b"0").decode())
    max_leverage = fields.get(b"max_leverage") or None
    return Account(
        account_id=account_id,
        balance=Decimal(fields[b"balance"].decode()),
        status=TradingState(fields.get(b"status", b"ACTIVE").decode()),
        peak_equity=peak,
        daily_start_equity=daily,
        max_leverage=Decimal(max_leverage.decode()) if max_leverage else None,
        positions=positions,
    )


# -- CONFIGURATION --

def encode_symbol(spec: SymbolSpec) -> bytes:
    return orjson.dumps({
        "symbol": spec.symbol,
        "imr": str(spec.imr),
        "mmr": str(spec.mmr),
        "price_collar": None if spec.price_collar is None else str(spec.price_collar),
        "max_order_notional": None if spec.max_order_notional is None
        else str(spec.max_order_notional),
    })


def decode_symbol(raw: bytes) -> SymbolSpec:
    d = orjson.loads(raw)
    return SymbolSpec(
        symbol=d["symbol"],
        imr=Decimal(d["imr"]),
        mmr=Decimal(d["mmr"]),
        price_collar=None if d.get("price_collar") is None else Decimal(d["price_collar"]),
        max_order_notional=None if d.get("max_order_notional") is None
        else Decimal(d["max_order_notional"]),
    )


def policy_to_dict(p: Policy) -> dict:
    return {
        "name": p.name, "type": p.type.value, "metric": p.metric, "operator": p.operator,
        "threshold": str(p.threshold), "scope": p.scope, "scope_id": p.scope_id,
        "enabled": p.enabled, "priority": p.priority, "version": p.version,
    }


def policy_from_dict(d: Mapping) -> Policy:
    return Policy(
        name=d["name"], type=PolicyType(d["type"]), metric=d["metric"],
        operator=d["operator"], threshold=Decimal(str(d["threshold"])),
        scope=d.get("scope") or "account", scope_id=d.get("scope_id"),
        enabled=bool(d.get("enabled", True)), priority=int(d.get("priority", 0)),
        version=int(d.get("version", 1)),
    )


def decimal_or_none(value: bytes | str | None) -> Decimal | None:
    if not value:
        return None
    return Decimal(value.decode() if isinstance(value, bytes) else value)


def money(value: Decimal | None) -> str | None:
    """Decimals travel in journal records as strings, so nothing is rounded on the way."""
    return None if value is None else str(value)


__all__ = ["ZERO"]
