"""Redis key layout of the hot state. One place, so every process agrees.

| key | type | holds |
| --- | --- | --- |
| ``risk:state`` | hash | platform trading state: state, reason, by, at, stop_id, ver |
| ``risk:acct:<id>`` | hash | balance, status, peak/day-start equity, max_leverage, shard, slot, ver |
| ``risk:acct:nonactive`` | set | accounts in REDUCING or HALTED |
| ``risk:pos:<id>`` | hash | symbol -> ``"quantity|entry"`` |
| ``risk:px`` | hash | symbol -> ``"mark|feed ts"`` |
| ``risk:px:held`` | hash | prices held back by the jump check, awaiting confirmation |
| ``risk:feed`` | hash | last feed timestamp and when it was received |
| ``risk:sym`` | hash | symbol -> JSON spec |
| ``risk:pol`` | string | JSON list of policies |
| ``risk:cfgver`` | string | a new random token on every symbol or policy change |
| ``risk:idem:<n>:<acct>:<order>`` | string | first decision of an order id (25 h) |
| ``risk:rl:<acct>`` | zset | checks in the rate-limit window |
| ``risk:fill:<fill id>`` | string | fill already applied (30 days) |
| ``risk:shard:<k>:members`` | list | account ids of shard k; the index is the account's slot |
| ``risk:shard:<k>:chg`` | stream | ids of accounts of shard k that changed (monitor cache) |
| ``risk:shard:<k>:hwm`` / ``:day`` | string | float64 per slot: peak / day-start equity |
| ``risk:shard:<k>:dayid`` / ``:marksver`` | string | UTC day of ``:day``; version of both blobs |
| ``risk:audit`` | stream | pre-trade decisions on their way to PostgreSQL |
| ``risk:journal`` | stream | every other record on its way to PostgreSQL |

Account and order ids are length-prefixed where two of them share a key, so that no
pair of ids can produce the key of another pair.
"""

from __future__ import annotations

import zlib

PLATFORM_STATE = "risk:state"
PRICES = "risk:px"
PRICES_HELD = "risk:px:held"
FEED = "risk:feed"
SYMBOLS = "risk:sym"
POLICIES = "risk:pol"
CONFIG_VERSION = "risk:cfgver"
AUDIT_STREAM = "risk:audit"
JOURNAL_STREAM = "risk:journal"
SHARD_PREFIX = "risk:shard:"
SHARD_COUNT = "risk:shards"
NON_ACTIVE = "risk:acct:nonactive"  # set of accounts whose state is not ACTIVE  # the shard count the membership lists were built with


def account(account_id: str) -> str:
    return f"risk:acct:{account_id}"


def positions(account_id: str) -> str:
    return f"risk:pos:{account_id}"


def idempotency(account_id: str, order_id: str) -> str:
    return f"risk:idem:{len(account_id)}:{account_id}:{order_id}"


def rate_window(account_id: str) -> str:
    return f"risk:rl:{account_id}"


def fill(fill_id: str) -> str:
    return f"risk:fill:{fill_id}"


def shard_members(shard: int) -> str:
    return f"{SHARD_PREFIX}{shard}:members"


def shard_changes(shard: int) -> str:
    return f"{SHARD_PREFIX}{shard}:chg"


def shard_hwm(shard: int) -> str:
    return f"{SHARD_PREFIX}{shard}:hwm"


def shard_day(shard: int) -> str:
    return f"{SHARD_PREFIX}{shard}:day"


def shard_dayid(shard: int) -> str:
    return f"{SHARD_PREFIX}{shard}:dayid"


def shard_marks_version(shard: int) -> str:
    """Bumped whenever a shard's hwm/day blobs change, so caches know to re-read them."""
    return f"{SHARD_PREFIX}{shard}:marksver"


def shard_of(account_id: str, shards: int) -> int:
    """Stable shard of an account: CRC-32 of its id modulo the shard count."""
    return zlib.crc32(account_id.encode()) % shards
