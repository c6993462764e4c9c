"""A reference check of the hot state in Redis: after fuzzing or faults, everything there
must still decode and agree with itself.

``violations(redis, shards)`` returns what is wrong (an empty list when nothing is):

- every account hash decodes (balance, status, peaks, max leverage), sits in the member
  list of its shard at its slot, and is in the non-ACTIVE set exactly when it is not
  ACTIVE; every member of a shard list has an account hash, and no id is listed twice;
- every position decodes to a non-zero, finite quantity and a positive, finite entry
  price, for a configured symbol, and belongs to an existing account;
- every mark decodes to a positive, finite price with a finite timestamp;
- symbols and policies decode; the platform state is a known state;
- every record waiting in the journal streams is JSON with a kind.

``fill_sums`` checks positions against the fills a test saw applied.
"""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal
from typing import Any, Iterable

import orjson

from risk_tasks.engine.model import TradingState
from risk_tasks.state import keys
from risk_tasks.state.codec import decode_account, decode_mark, decode_positions, decode_symbol
from risk_tasks.state.codec import policy_from_dict

STATES = {s.value for s in TradingState}


def _finite(value: Decimal) -> bool:
    return value.is_finite()


def violations(r: Any, shards: int) -> list[str]:  # noqa: C901 - one list of checks
    found: list[str] = []
    # -- SHARD MEMBERSHIP --
    member_of: dict[str, tuple[int, int]] = {}
    for shard in range(shards):
        for slot, raw in enumerate(r.lrange(keys.shard_members(shard), 0, -1)):
            account_id = raw.decode()
            if account_id in member_of:
                found.append(f"{account_id} listed twice: {member_of[account_id]} and "
                             f"{(shard, slot)}")
            member_of[account_id] = (shard, slot)
    # -- ACCOUNTS --
    account_ids = set()
    non_active = {m.decode() for m in r.smembers(keys.NON_ACTIVE)}
    specs = {}
    for sym, raw in r.hgetall(keys.SYMBOLS).items():
        try:
            specs[sym.decode()] = decode_symbol(raw)
        except Exception as exc:  # noqa: BLE001 - reported
            found.append(f"symbol {sym!r} does not decode: {exc!r}")
    for key in r.scan_iter(match="risk:acct:*", count=1000):
        name = key.decode()
        if name == keys.NON_ACTIVE:
            continue
        account_id = name[len("risk:acct:"):]
        account_ids.add(account_id)
        fields = r.hgetall(key)
        try:
            positions = decode_positions(r.hgetall(keys.positions(account_id)))
            account = decode_account(account_id, fields, positions)
        except Exception as exc:  # noqa: BLE001 - reported
            found.append(f"account {account_id} does not decode: {exc!r}")
            continue
        for value in (account.balance, account.peak_equity, account.daily_start_equity):
            if not _finite(value):
                found.append(f"account {account_id} has a non-finite amount {value}")
        if account.status.value not in STATES:
            found.append(f"account {account_id} has status {account.status}")
        if (account.status is not TradingState.ACTIVE) != (account_id in non_active):
            found.append(f"account {account_id} ({account.status.value}) and the non-active "
                         "set disagree")
        try:
            place = (int(fields[b"shard"]), int(fields[b"slot"]))
        except (KeyError, ValueError) as exc:
            found.append(f"account {account_id} has no shard/slot: {exc!r}")
            continue
        if place[0] != keys.shard_of(account_id, shards):
            found.append(f"account {account_id} is in shard {place[0]}, its hash says "
                         f"{keys.shard_of(account_id, shards)}")
        if member_of.get(account_id) != place:
            found.append(f"account {account_id} at {place}, member list says "
                         f"{member_of.get(account_id)}")
        for symbol, position in positions.items():
            if not position.quantity or not _finite(position.quantity):
                found.append(f"position {account_id}/{symbol} has quantity {position.quantity}")
            if not _finite(position.entry_price) or position.entry_price <= 0:
                found.append(f"position {account_id}/{symbol} has entry {position.entry_price}")
            if symbol not in specs:
                found.append(f"position {account_id}/{symbol} is in an unknown symbol")
    for account_id in set(member_of) - account_ids:
        found.append(f"{account_id} is a shard member without an account")
    for account_id in non_active - account_ids:
        found.append(f"{account_id} is in the non-active set without an account")
    for key in r.scan_iter(match="risk:pos:*", count=1000):
        if key.decode()[len("risk:pos:"):] not in account_ids:
            found.append(f"{key!r} has no account")
    # -- PRICES, CONFIGURATION, PLATFORM --
    for sym, raw in r.hgetall(keys.PRICES).items():
        try:
            mark = decode_mark(raw)
            if not (_finite(mark.price) and mark.price > 0 and mark.ts == mark.ts
                    and abs(mark.ts) != float("inf")):
                found.append(f"mark {sym!r} is {raw!r}")
        except Exception as exc:  # noqa: BLE001 - reported
            found.append(f"mark {sym!r} does not decode: {raw[:80]!r} {exc!r}")
    try:
        [policy_from_dict(d) for d in orjson.loads(r.get(keys.POLICIES) or b"[]")]
    except Exception as exc:  # noqa: BLE001 - reported
        found.append(f"policies do not decode: {exc!r}")
    state = (r.hget(keys.PLATFORM_STATE, "state") or b"ACTIVE").decode()
    if state not in STATES:
        found.append(f"platform state {state!r}")
    # -- JOURNALS --
    for stream in (keys.AUDIT_STREAM, keys.JOURNAL_STREAM):
        for eid, entry in r.xrange(stream):
            try:
                record = orjson.loads(entry[b"d"])
            except Exception as exc:  # noqa: BLE001 - reported
                found.append(f"{stream} {eid!r} is not JSON: {exc!r}")
                continue
            if stream == keys.JOURNAL_STREAM and "t" not in record:
                found.append(f"{stream} {eid!r} has no kind")
            if stream == keys.AUDIT_STREAM and "r" not in record:
                found.append(f"{stream} {eid!r} has no result")
    return found


def fill_sums(r: Any, fills: Iterable[tuple[str, str, Decimal]]) -> list[str]:
    """Positions equal the sum of the signed fill quantities a test saw applied
    (``(account_id, symbol, signed quantity)``; accounts with other changes excluded)."""
    expected: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for account_id, symbol, signed in fills:
        expected[(account_id, symbol)] += signed
    found = []
    for (account_id, symbol), quantity in expected.items():
        raw = r.hget(keys.positions(account_id), symbol)
        held = Decimal(raw.decode().split("|")[0]) if raw else Decimal(0)
        if held != quantity:
            found.append(f"{account_id}/{symbol}: position {held}, fills sum to {quantity}")
    return found
