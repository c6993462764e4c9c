"""A worker process's copy of a shard, as arrays, kept current by the change stream.

Loading a shard reads every account of it from Redis once (one pipelined pass). After
that, a tick reads only what changed: the shard's change stream (``risk:shard:<k>:chg``,
one entry per account commit) names the accounts to re-read. Any process may evaluate
any shard, so each keeps its own copies; a copy that cannot be caught up (the stream
was trimmed past it, or Redis was flushed) is loaded again from scratch.

Cost (stated, not asserted): about 40 bytes per position and 50 per account in arrays,
so 1,000,000 accounts with 3 positions each take about 170 MB per process holding all
shards.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np
import redis

from risk_tasks.engine.vector import Book
from risk_tasks.state import keys

STATUS_CODES = {b"ACTIVE": 0, b"REDUCING": 1, b"HALTED": 2}
ACTIVE, REDUCING, HALTED = 0, 1, 2
LOAD_CHUNK = 2000
MAX_CHANGES_PER_TICK = 500_000


class SymbolIndex:
    """Symbol -> column index, stable for the life of the process (grows only)."""

    def __init__(self) -> None:
        self.index: dict[str, int] = {}
        self.names: list[str] = []

    def __call__(self, symbol: str) -> int:
        found = self.index.get(symbol)
        if found is None:
            found = len(self.names)
            self.index[symbol] = found
            self.names.append(symbol)
        return found


@dataclass
class ShardCache:
    shard: int
    symbols: SymbolIndex
    ids: list[str] = field(default_factory=list)
    slot_of: dict[str, int] = field(default_factory=dict)
    balance: np.ndarray = field(default_factory=lambda: np.zeros(0))
    peak_base: np.ndarray = field(default_factory=lambda: np.zeros(0))
    daily_base: np.ndarray = field(default_factory=lambda: np.zeros(0))
    max_leverage: np.ndarray = field(default_factory=lambda: np.zeros(0))
    status: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int8))
    pos_slot: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    pos_sym: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    pos_qty: np.ndarray = field(default_factory=lambda: np.zeros(0))
    pos_entry: np.ndarray = field(default_factory=lambda: np.zeros(0))
    stream_id: tuple[int, int] | None = None  # last change applied; None: not loaded
    marks_version: bytes | None = None
    hwm: np.ndarray = field(default_factory=lambda: np.zeros(0))
    day: np.ndarray = field(default_factory=lambda: np.zeros(0))
    day_id: str = ""

    @property
    def n(self) -> int:
        return len(self.ids)

    def book(self) -> Book:
        return Book(self.balance, self.pos_slot, self.pos_sym, self.pos_qty, self.pos_entry)

    # -- LOADING --

    def refresh(self, client: redis.Redis) -> str:
        """Bring the copy up to date; returns "load", "delta" or "hit"."""
        if self.stream_id is None:
            self.load(client)
            return "load"
        chg = keys.shard_changes(self.shard)
        pipe = client.pipeline(transaction=False)
        pipe.xinfo_stream(chg)
        pipe.llen(keys.shard_members(self.shard))
        pipe.lindex(keys.shard_members(self.shard), 0)
        pipe.xrange(chg, min=f"({self.stream_id[0]}-{self.stream_id[1]}",
                    count=MAX_CHANGES_PER_TICK)
        info, members, first, entries = pipe.execute(raise_on_error=False)
        if isinstance(info, Exception) or isinstance(entries, Exception):
            # No stream at all: the shard was flushed (or never had an account).
            self.load(client)
            return "load"
        if self.ids and (first or b"").decode() != self.ids[0]:
            # The member list is not the one this copy was made from: the state was
            # emptied and loaded again between two ticks.
            self.load(client)
            return "load"
        last = _parse_id(info["last-generated-id"])
        deleted = _parse_id(info.get("max-deleted-entry-id") or b"0-0")
        if members < self.n or last < self.stream_id or deleted > self.stream_id \
                or len(entries) >= MAX_CHANGES_PER_TICK:
            self.load(client)  # trimmed past us, flushed, or too far behind
            return "load"
        if not entries and members == self.n:
            return "hit"
        changed = {e[1][b"a"].decode() for e in entries}
        if members > self.n:
            new_ids = [m.decode() for m in client.lrange(keys.shard_members(self.shard),
                                                         self.n, members - 1)]
            self._grow(new_ids)
            changed.update(new_ids)
        self._apply(client, changed)
        if entries:
            self.stream_id = _parse_id(entries[-1][0])
        return "delta"

    def load(self, client: redis.Redis) -> None:
        """Read the whole shard (its stream position first, so nothing is missed)."""
        chg = keys.shard_changes(self.shard)
        tip = client.xrevrange(chg, count=1)
        ids = [m.decode() for m in client.lrange(keys.shard_members(self.shard), 0, -1)]
        self.ids, self.slot_of = [], {}
        n = 0
        self.balance = np.zeros(n)
        self.peak_base = np.zeros(n)
        self.daily_base = np.zeros(n)
        self.max_leverage = np.zeros(n)
        self.status = np.zeros(n, dtype=np.int8)
        self.pos_slot = np.zeros(0, dtype=np.int64)
        self.pos_sym = np.zeros(0, dtype=np.int64)
        self.pos_qty = np.zeros(0)
        self.pos_entry = np.zeros(0)
        self._grow(ids)
        self._apply(client, ids, full=True)
        self.stream_id = _parse_id(tip[0][0]) if tip else (0, 0)
        self.marks_version = None

    def _grow(self, new_ids: list[str]) -> None:
        start = self.n
        for i, account_id in enumerate(new_ids):
            self.slot_of[account_id] = start + i
        self.ids.extend(new_ids)
        extra = len(new_ids)
        self.balance = np.concatenate([self.balance, np.zeros(extra)])
        self.peak_base = np.concatenate([self.peak_base, np.zeros(extra)])
        self.daily_base = np.concatenate([self.daily_base, np.zeros(extra)])
        self.max_leverage = np.concatenate([self.max_leverage, np.full(extra, np.nan)])
        self.status = np.concatenate([self.status, np.zeros(extra, dtype=np.int8)])

    def _apply(self, client: redis.Redis, account_ids: Iterable[str], full: bool = False) -> None:
        """Re-read accounts (pipelined, in chunks) and replace their rows."""
        ids = [a for a in account_ids if a in self.slot_of]
        if not ids:
            return
        slots, syms, qtys, entries = [], [], [], []
        index = self.symbols
        for start in range(0, len(ids), LOAD_CHUNK):
            chunk = ids[start:start + LOAD_CHUNK]
            pipe = client.pipeline(transaction=False)
            for account_id in chunk:
                pipe.hgetall(keys.account(account_id))
                pipe.hgetall(keys.positions(account_id))
            replies = pipe.execute()
            for i, account_id in enumerate(chunk):
                fields, positions = replies[2 * i], replies[2 * i + 1]
                slot = self.slot_of[account_id]
                if not fields:  # deleted: keep the slot, flat and halted
                    self.balance[slot] = 0.0
                    self.status[slot] = HALTED
                    continue
                self.balance[slot] = float(fields[b"balance"])
                self.peak_base[slot] = float(fields.get(b"peak_equity") or 0)
                self.daily_base[slot] = float(fields.get(b"daily_start_equity") or 0)
                cap = fields.get(b"max_leverage")
                self.max_leverage[slot] = float(cap) if cap else math.nan
                self.status[slot] = STATUS_CODES.get(fields.get(b"status", b"ACTIVE"), ACTIVE)
                for symbol, raw in positions.items():
                    quantity, entry = raw.split(b"|", 1)
                    q = float(quantity)
                    if q:
                        slots.append(slot)
                        syms.append(index(symbol.decode()))
                        qtys.append(q)
                        entries.append(float(entry))
        if full:
            keep = np.zeros(0, dtype=bool)
            self.pos_slot = np.array(slots, dtype=np.int64)
            self.pos_sym = np.array(syms, dtype=np.int64)
            self.pos_qty = np.array(qtys, dtype=np.float64)
            self.pos_entry = np.array(entries, dtype=np.float64)
            return
        changed = np.array([self.slot_of[a] for a in ids], dtype=np.int64)
        keep = ~np.isin(self.pos_slot, changed)
        self.pos_slot = np.concatenate([self.pos_slot[keep], np.array(slots, dtype=np.int64)])
        self.pos_sym = np.concatenate([self.pos_sym[keep], np.array(syms, dtype=np.int64)])
        self.pos_qty = np.concatenate([self.pos_qty[keep], np.array(qtys, dtype=np.float64)])
        self.pos_entry = np.concatenate([self.pos_entry[keep],
                                         np.array(entries, dtype=np.float64)])

    # -- MONITOR MARKS (peak and day-start equity blobs) --

    def marks_arrays(self, client: redis.Redis, version: bytes | None) -> None:
        """Load the shard's peak / day-start blobs when another process changed them."""
        if version == self.marks_version and len(self.hwm) == self.n:
            return
        pipe = client.pipeline(transaction=False)
        pipe.get(keys.shard_hwm(self.shard)).get(keys.shard_day(self.shard))
        pipe.get(keys.shard_dayid(self.shard))
        hwm, day, dayid = pipe.execute()
        self.hwm = _blob(hwm, self.n)
        self.day = _blob(day, self.n)
        self.day_id = (dayid or b"").decode()
        self.marks_version = version


def _blob(raw: bytes | None, n: int) -> np.ndarray:
    """A float64 blob padded with NaN (unset) to ``n`` slots."""
    values = np.frombuffer(raw, dtype="<f8").copy() if raw else np.zeros(0)
    if len(values) < n:
        values = np.concatenate([values, np.full(n - len(values), np.nan)])
    return values[:n]


def _parse_id(raw: bytes | str) -> tuple[int, int]:
    text = raw.decode() if isinstance(raw, bytes) else raw
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


_caches: dict[tuple[str, int, int], ShardCache] = {}
_symbols = SymbolIndex()


def cache_for(redis_url: str, shard: int, shards: int) -> ShardCache:
    key = (redis_url, shard, shards)
    cache = _caches.get(key)
    if cache is None:
        cache = _caches[key] = ShardCache(shard, _symbols)
    return cache


def symbol_index() -> SymbolIndex:
    return _symbols


def forget_caches() -> None:
    _caches.clear()


def preload(client: redis.Redis, redis_url: str, shards: int) -> int:
    """Read every shard into this process's caches; the accounts read.

    Run by a monitor worker before its pool starts: a prefork child is forked with the
    copies (and catches up from the change stream at its first tick), and a solo worker
    evaluates with them itself. Without it, each process reads a shard whole the first
    time it draws it, and at 1,000,000 accounts that stalls a tick for seconds, whenever
    it happens (any process may take any shard, so a child may first meet some shard
    many ticks after it started)."""
    return sum(_loaded(cache_for(redis_url, shard, shards), client) for shard in range(shards))


def startup_allowance(accounts: int) -> float:
    """Seconds to wait for a monitor worker's first answer: it answers only once it has
    preloaded every shard (measured here: 10.7 s from its start at 100,000 accounts, 71 to
    89 s at 1,000,000; the allowance is a minute plus 10 s per 100,000 accounts)."""
    return 60 + accounts / 10_000


def _loaded(cache: ShardCache, client: redis.Redis) -> int:
    cache.refresh(client)
    return cache.n
