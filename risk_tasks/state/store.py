"""The hot state in Redis: prices, accounts, positions, trading states, configuration.

Redis is the working copy every worker shares; PostgreSQL is the system of record. Each
change here writes, in the same atomic step (a Lua script or MULTI/EXEC), a journal
record to ``risk:journal`` that ``risk_tasks.journal`` drains into PostgreSQL, so the two
cannot drift apart: what PostgreSQL lacks is exactly the undrained tail of the journal.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from decimal import Decimal
from importlib import resources
from typing import Any, Iterable, Iterator, Mapping, Protocol, Sequence

import orjson
import redis

from risk_tasks.engine.model import (
    Account, Fill, Mark, Policy, Position, Side, SymbolSpec, TradingState,
)
from risk_tasks.engine.policies import order_policies
from risk_tasks.engine.positions import apply_fill
from risk_tasks.settings import Settings
from risk_tasks.state import keys
from risk_tasks.state.codec import (
    day_id, decode_account, decode_mark, decode_position, decode_positions, decode_slot,
    decode_symbol, encode_position, encode_symbol, money, pairs, policy_from_dict,
    policy_to_dict, text,
)

CHANGE_STREAM_MAXLEN = 200_000
COMMIT_ATTEMPTS = 20


class Clock(Protocol):
    def time(self) -> float:
        """Seconds since the epoch."""


class SystemClock:
    @staticmethod
    def time() -> float:
        return time.time()


class StateError(Exception):
    """A state change that cannot be made (unknown account, unknown symbol)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class ConfigSnapshot:
    """Symbols and policies as of one ``risk:cfgver``; cached per process."""

    version: bytes
    specs: Mapping[str, SymbolSpec]
    policies: tuple[Policy, ...]  # enabled, highest priority first
    all_policies: tuple[Policy, ...]


def _script(name: str) -> str:
    return resources.files("risk_tasks.state").joinpath("lua").joinpath(name).read_text()


def _one_and_many(name: str, function: str, keys_per: int, args_per: int) -> tuple[str, str]:
    """A script that defines ``function(KEYS, ARGV)``, called for one item, and the same
    body called for each consecutive group of keys and arguments (one round trip and one
    script invocation for a whole batch)."""
    body = _script(name)
    one = body + f"return {function}(KEYS, ARGV)\n"
    many = body + _each_group(function, keys_per, args_per, f"#KEYS / {keys_per}") + "return out\n"
    return one, many


def _each_group(function: str, keys_per: int, args_per: int, groups: str) -> str:
    """Lua that calls ``function`` for each of the first ``groups`` consecutive groups of
    keys and arguments, into the table ``out``."""
    return f"""local out = {{}}
for i = 0, {groups} - 1 do
  local k, a = {{}}, {{}}
  for j = 1, {keys_per} do k[j] = KEYS[i * {keys_per} + j] end
  for j = 1, {args_per} do a[j] = ARGV[i * {args_per} + j] end
  out[i + 1] = {function}(k, a)
end
"""


def _replying(name: str, function: str, keys_per: int, args_per: int) -> str:
    """The one-item script of ``_one_and_many`` that, when the call returns ``{'OK'}``,
    also stores and publishes a task's result document as Celery's Redis result backend
    does (in the backend's database, which the script selects for itself): one more key,
    the result's, and three more arguments, its document, expiry (s) and database."""
    k, a = keys_per + 1, args_per
    return _script(name) + f"""local status = {function}(KEYS, ARGV)
if status[1] == 'OK' then
  redis.call('SELECT', ARGV[{a + 3}])
  redis.call('SET', KEYS[{k}], ARGV[{a + 1}], 'EX', ARGV[{a + 2}])
  redis.call('PUBLISH', KEYS[{k}], ARGV[{a + 1}])
end
return status
"""


def _many_replying(name: str, function: str, keys_per: int, args_per: int) -> str:
    """The many-item script of ``_one_and_many`` that, when no call returns
    ``{'RETRY'}``, also stores and publishes its task's result document, a list, as
    Celery's Redis result backend does (in the backend's database). After the groups:
    one key, the result's; arguments: the document's bytes before the list and after
    it, its expiry (s) and database, then each item of the list as JSON, or as '' for
    the next call's own (its ``ARGV[1]`` when it returns ``{'OK'}``, the stored value
    when ``{'DUP', stored}``)."""
    return _script(name) + f"local n = (#KEYS - 1) / {keys_per}\n" + \
        _each_group(function, keys_per, args_per, "n") + f"""local base = n * {args_per}
local items, c = {{}}, 0
for p = base + 5, #ARGV do
  local item = ARGV[p]
  if item == '' then
    c = c + 1
    local status = out[c]
    if status[1] == 'OK' then
      item = ARGV[(c - 1) * {args_per} + 1]
    elseif status[1] == 'DUP' then
      item = status[2]
    else
      return out  -- decided again by the caller, who stores the result
    end
  end
  items[#items + 1] = item
end
local doc = ARGV[base + 1] .. '[' .. table.concat(items, ',') .. ']' .. ARGV[base + 2]
redis.call('SELECT', ARGV[base + 4])
redis.call('SET', KEYS[#KEYS], doc, 'EX', ARGV[base + 3])
redis.call('PUBLISH', KEYS[#KEYS], doc)
return out
"""


def connect(url: str, socket_timeout: float = 5.0) -> redis.Redis:
    """A Redis client for the state store: bytes replies, retries on connection loss."""
    from redis.backoff import ExponentialBackoff
    from redis.retry import Retry

    return redis.Redis.from_url(
        url,
        decode_responses=False,
        socket_timeout=socket_timeout,
        socket_connect_timeout=socket_timeout,
        health_check_interval=10,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=5),
        retry_on_error=[redis.ConnectionError, redis.TimeoutError],
    )


class StateStore:
    def __init__(self, client: redis.Redis, settings: Settings, clock: Clock | None = None):
        self.redis = client
        self.settings = settings
        self.clock = clock or SystemClock()
        read_one, read_many = _one_and_many("check_read.lua", "check_read", 7, 4)
        commit_one, commit_many = _one_and_many("check_commit.lua", "check_commit", 4, 6)
        self.check_read_script = client.register_script(read_one)
        self.check_read_many = client.register_script(read_many)
        self.check_commit_script = client.register_script(commit_one)
        self.check_commit_many = client.register_script(commit_many)
        self.check_commit_replying = client.register_script(
            _replying("check_commit.lua", "check_commit", 4, 6))
        self.check_commit_many_replying = client.register_script(
            _many_replying("check_commit.lua", "check_commit", 4, 6))
        self._account_commit = client.register_script(_script("account_commit.lua"))
        self._ingest_prices = client.register_script(_script("ingest_prices.lua"))
        self._config: ConfigSnapshot | None = None

    # -- CONFIGURATION --

    def config(self, version: bytes | None = None) -> ConfigSnapshot:
        """Symbols and policies; re-read only when ``risk:cfgver`` moved past the cache."""
        cached = self._config
        if cached is not None and version is not None and cached.version == version:
            return cached
        pipe = self.redis.pipeline(transaction=True)
        pipe.get(keys.CONFIG_VERSION).hgetall(keys.SYMBOLS).get(keys.POLICIES)
        ver, raw_specs, raw_policies = pipe.execute()
        specs = {k.decode(): decode_symbol(v) for k, v in raw_specs.items()}
        policies = tuple(policy_from_dict(d) for d in orjson.loads(raw_policies or b"[]"))
        self._config = ConfigSnapshot(ver or b"0", specs, order_policies(policies), policies)
        return self._config

    def current_config(self) -> ConfigSnapshot:
        return self.config(self.redis.get(keys.CONFIG_VERSION) or b"0")

    def put_symbols(self, specs: Iterable[SymbolSpec]) -> int:
        pipe = self.redis.pipeline(transaction=True)
        count = 0
        for spec in specs:
            pipe.hset(keys.SYMBOLS, spec.symbol, encode_symbol(spec))
            count += 1
        pipe.set(keys.CONFIG_VERSION, uuid.uuid4().hex)
        pipe.execute()
        return count

    def put_policies(self, policies: Sequence[Policy]) -> None:
        """Replace the policy set every worker evaluates (PostgreSQL holds the master)."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.set(keys.POLICIES, orjson.dumps([policy_to_dict(p) for p in policies]))
        pipe.set(keys.CONFIG_VERSION, uuid.uuid4().hex)
        pipe.execute()

    # -- PRICES --

    def ingest_prices(self, prices: Mapping[str, Decimal], ts: float) -> dict[str, int]:
        if not prices:
            return {"accepted": 0, "out_of_order": 0, "held": 0, "confirmed": 0}
        args: list[Any] = [repr(ts), repr(self.settings.price_jump_fraction)]
        for symbol, price in prices.items():
            args += [symbol, str(price)]
        accepted, old, held, confirmed = self._ingest_prices(
            keys=[keys.PRICES, keys.PRICES_HELD, keys.FEED], args=args)
        return {"accepted": accepted, "out_of_order": old, "held": held, "confirmed": confirmed}

    def marks(self) -> dict[str, Mark]:
        return {k.decode(): decode_mark(v) for k, v in self.redis.hgetall(keys.PRICES).items()}

    def feed_status(self) -> dict[str, float | None]:
        raw = self.redis.hgetall(keys.FEED)
        last = raw.get(b"last_ts")
        received = raw.get(b"received_at")
        return {"last_ts": float(last) if last else None,
                "received_at": float(received) if received else None}

    # -- PLATFORM STATE --

    def platform_state(self) -> dict[str, Any]:
        raw = self.redis.hgetall(keys.PLATFORM_STATE)
        return {
            "state": text(raw.get(b"state")) or TradingState.ACTIVE.value,
            "reason": text(raw.get(b"reason")),
            "by": text(raw.get(b"by")),
            "at": float(raw[b"at"]) if raw.get(b"at") else None,
            "stop_id": text(raw.get(b"stop_id")) or None,
            "version": int(raw.get(b"ver") or 0),
        }

    def set_platform_state(self, state: TradingState, reason: str, by: str,
                           stop_id: str | None, extra_records: Sequence[dict] = (),
                           only_from: Sequence[TradingState] | None = None) -> tuple[dict, bool]:
        """Move the platform to ``state``; returns ``(state before, changed)``.

        The change and its journal records are one transaction. ``only_from`` makes it
        conditional on the current state (so a feed-stale REDUCING never lifts a stop).
        """
        now = self.clock.time()

        def change(pipe: redis.client.Pipeline) -> tuple[dict, bool]:
            raw = pipe.hgetall(keys.PLATFORM_STATE)
            old = text(raw.get(b"state")) or TradingState.ACTIVE.value
            if old == state.value or (only_from is not None
                                      and old not in {s.value for s in only_from}):
                return {"state": old, "stop_id": text(raw.get(b"stop_id"))}, False
            pipe.multi()
            pipe.hset(keys.PLATFORM_STATE, mapping={
                "state": state.value, "reason": reason, "by": by, "at": repr(now),
                "stop_id": stop_id or "",
            })
            pipe.hincrby(keys.PLATFORM_STATE, "ver", 1)
            self.journal_to(pipe, {
                "t": "trading_state", "scope": "global", "account_id": None, "old": old,
                "new": state.value, "reason": reason, "by": by, "stop_id": stop_id, "at": now,
            })
            for record in extra_records:
                self.journal_to(pipe, record)
            return {"state": old, "stop_id": text(raw.get(b"stop_id"))}, True

        return self.redis.transaction(change, keys.PLATFORM_STATE, value_from_callable=True)

    # -- ACCOUNTS --

    def account_exists(self, account_id: str) -> bool:
        return bool(self.redis.exists(keys.account(account_id)))

    def read_account(self, account_id: str) -> tuple[Account | None, dict[str, Any]]:
        """The account with its positions, and its raw fields (shard, slot, ver, ...)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(keys.account(account_id)).hgetall(keys.positions(account_id))
        fields, raw_positions = pipe.execute()
        if not fields:
            return None, {}
        shard, slot = int(fields[b"shard"]), int(fields[b"slot"])
        off = slot * 8
        pipe = self.redis.pipeline(transaction=False)
        pipe.getrange(keys.shard_hwm(shard), off, off + 7)
        pipe.getrange(keys.shard_day(shard), off, off + 7)
        pipe.get(keys.shard_dayid(shard))
        hwm, day, dayid = pipe.execute()
        today = day_id(self.clock.time())
        account = decode_account(account_id, fields, decode_positions(raw_positions),
                                 decode_slot(hwm), decode_slot(day),
                                 (dayid or b"").decode() == today)
        meta = {k.decode(): v.decode() for k, v in fields.items()}
        return account, meta

    def upsert_account(self, parsed: Mapping[str, Any], by: str = "ingest") -> dict[str, Any]:
        """Create or update an account from ``validation.validate_account`` output."""
        account_id: str = parsed["account_id"]
        for _ in range(COMMIT_ATTEMPTS):
            fields = self.redis.hgetall(keys.account(account_id))
            exists = bool(fields)
            now = self.clock.time()
            balance: Decimal = parsed["balance"]
            new: dict[str, str] = {"balance": str(balance), "updated_at": repr(now)}
            if not exists:
                shard = keys.shard_of(account_id, self.settings.shards)
                new.update(
                    shard=str(shard),
                    created_at=repr(now),
                    status=parsed.get("status", TradingState.ACTIVE).value,
                    peak_equity=str(parsed.get("peak_equity", balance)),
                    daily_start_equity=str(parsed.get("daily_start_equity", balance)),
                    max_leverage=money(parsed.get("max_leverage")) or "",
                )
                old_status = None
            else:
                shard = int(fields[b"shard"])
                old_status = fields[b"status"].decode()
                for name in ("peak_equity", "daily_start_equity", "max_leverage"):
                    if name in parsed:
                        new[name] = str(parsed[name])
                if "status" in parsed:
                    new["status"] = parsed["status"].value
            status = new.get("status", old_status)
            state_change = None
            if status != old_status:
                new.update(status_reason="account upsert", status_by=by, status_at=repr(now),
                           stop_id="")
                state_change = {"scope": "account", "account_id": account_id, "old": old_status,
                                "new": status, "reason": "account upsert", "by": by,
                                "stop_id": None, "at": now}
            merged = {k.decode(): v.decode() for k, v in fields.items()} | new
            record = {"t": "account", "at": now, "account": _account_record(account_id, merged),
                      "positions": {}, "fill": None, "state_change": state_change}
            result = self._commit(
                account_id, shard, expected=fields.get(b"ver", b"").decode(), fields=new,
                record=record, status=status if status != old_status else "",
                peak=new.get("peak_equity") if exists and "peak_equity" in parsed else "",
                day=new.get("daily_start_equity")
                if exists and "daily_start_equity" in parsed else "",
            )
            if result[0] == b"OK":
                return {"ok": True, "account_id": account_id, "created": not exists,
                        "version": int(result[1]), "status": status}
        raise StateError("contention", f"account {account_id} changed too often to update")

    def apply_fill(self, fill: Fill, source: str = "ingest",
                   reference: str | None = None) -> dict[str, Any]:
        """Move a position by a fill (idempotent per ``fill_id``); realised PnL to balance."""
        account_key = keys.account(fill.account_id)
        for _ in range(COMMIT_ATTEMPTS):
            pipe = self.redis.pipeline(transaction=False)
            pipe.hgetall(account_key).hget(keys.positions(fill.account_id), fill.symbol)
            pipe.exists(keys.fill(fill.fill_id)).hexists(keys.SYMBOLS, fill.symbol)
            fields, raw_position, seen, known_symbol = pipe.execute()
            if seen:
                return {"ok": True, "duplicate": True, "fill_id": fill.fill_id}
            if not fields:
                raise StateError("unknown_account", f"unknown account {fill.account_id}")
            if not known_symbol:
                raise StateError("unknown_symbol", f"unknown symbol {fill.symbol}")
            key_list, args, reply = self.fill_change(fill, fields, raw_position, source,
                                                     reference)
            result = self._account_commit(keys=key_list, args=args)
            if result[0] == b"OK":
                return reply
            if result[0] == b"DUP":
                return {"ok": True, "duplicate": True, "fill_id": fill.fill_id}
        raise StateError("contention", f"account {fill.account_id} changed too often to fill")

    def fill_change(self, fill: Fill, fields: Mapping[bytes, bytes], raw_position: bytes | None,
                    source: str, reference: str | None) -> tuple[list, list, dict[str, Any]]:
        """A fill on the account as read (its hash ``fields``, its position in the fill's
        symbol ``raw_position``): the keys and arguments of ``account_commit.lua`` that
        apply it if the account is still at that version, and ``apply_fill``'s reply.
        The one computation of a fill, for ``apply_fill`` and for callers that commit it
        inside a larger script (the paper gateway)."""
        if not fields:
            raise StateError("unknown_account", f"unknown account {fill.account_id}")
        position = decode_position(fill.symbol, raw_position) if raw_position else None
        signed = fill.quantity if fill.side is Side.BUY else -fill.quantity
        new_position, realized = apply_fill(position, fill.symbol, signed, fill.price)
        balance = Decimal(fields[b"balance"].decode()) + realized
        now = self.clock.time()
        new = {"balance": str(balance), "updated_at": repr(now)}
        merged = {k.decode(): v.decode() for k, v in fields.items()} | new
        record = {
            "t": "account", "at": now,
            "account": _account_record(fill.account_id, merged),
            "positions": {fill.symbol: [str(new_position.quantity),
                                        str(new_position.entry_price)]},
            "fill": {"fill_id": fill.fill_id, "symbol": fill.symbol,
                     "side": fill.side.value, "quantity": str(fill.quantity),
                     "price": str(fill.price), "realized_pnl": str(realized),
                     "source": source, "reference": reference},
            "state_change": None,
        }
        flat = not new_position.quantity
        key_list, args = self._commit_keys_args(
            fill.account_id, int(fields[b"shard"]), expected=fields[b"ver"].decode(),
            fields=new, record=record, fill_id=fill.fill_id,
            set_positions={} if flat else {fill.symbol: encode_position(new_position)},
            delete_positions=[fill.symbol] if flat else [],
        )
        reply = {"ok": True, "duplicate": False, "fill_id": fill.fill_id,
                 "position": {"symbol": fill.symbol,
                              "quantity": float(new_position.quantity),
                              "entry_price": float(new_position.entry_price)},
                 "realized_pnl": float(realized), "balance": float(balance)}
        return key_list, args, reply

    def create_accounts(self, items: Iterable[tuple[Mapping[str, Any], Sequence[Fill]]],
                        by: str = "load") -> dict[str, int]:
        """Create many new accounts with their opening fills, pipelined.

        The bulk form of ``upsert_account`` + ``apply_fill`` for snapshots: the same
        engine arithmetic, the same commit script (so the same journal records and shard
        notices), a few hundred accounts per round trip. An account that already exists
        goes through the one-by-one path instead, so nothing is overwritten.
        """
        created = existing = fills_applied = 0
        batch: list[tuple[Mapping[str, Any], Sequence[Fill]]] = []

        def flush() -> None:
            nonlocal created, existing, fills_applied
            if not batch:
                return
            pipe = self.redis.pipeline(transaction=False)
            for parsed, _ in batch:
                pipe.exists(keys.account(parsed["account_id"]))
            exists = pipe.execute()
            pipe = self.redis.pipeline(transaction=False)
            slow, fresh = [], []
            for (parsed, fills), there in zip(batch, exists):
                (slow if there else fresh).append((parsed, fills))
            for parsed, fills in fresh:
                self._queue_new_account(pipe, parsed, fills, by)
            replies = pipe.execute() if fresh else []
            for (parsed, fills), reply in zip(fresh, [r for r in replies if isinstance(r, list)]):
                if reply[0] == b"OK":
                    created += 1
                    fills_applied += len(fills)
                else:
                    slow.append((parsed, fills))
            for parsed, fills in slow:
                existing += 1
                self.upsert_account(parsed, by=by)
                for fill in fills:
                    if not self.apply_fill(fill).get("duplicate"):
                        fills_applied += 1
            batch.clear()

        for item in items:
            batch.append(item)
            if len(batch) >= 500:
                flush()
        flush()
        return {"created": created, "existing": existing, "fills": fills_applied}

    def _queue_new_account(self, pipe: redis.client.Pipeline, parsed: Mapping[str, Any],
                           fills: Sequence[Fill], by: str) -> None:
        account_id = parsed["account_id"]
        now = self.clock.time()
        balance: Decimal = parsed["balance"]
        positions: dict[str, Position] = {}
        fill_records = []
        for fill in fills:
            signed = fill.quantity if fill.side is Side.BUY else -fill.quantity
            positions[fill.symbol], realized = apply_fill(positions.get(fill.symbol),
                                                          fill.symbol, signed, fill.price)
            balance += realized
            fill_records.append((fill, realized))
            pipe.set(keys.fill(fill.fill_id), "1", ex=self.settings.fill_idempotency_ttl_seconds)
        status = parsed.get("status", TradingState.ACTIVE).value
        shard = keys.shard_of(account_id, self.settings.shards)
        opening = parsed["balance"]
        fields = {
            "balance": str(balance), "updated_at": repr(now), "shard": str(shard),
            "created_at": repr(now), "status": status,
            "peak_equity": str(parsed.get("peak_equity", opening)),
            "daily_start_equity": str(parsed.get("daily_start_equity", opening)),
            "max_leverage": money(parsed.get("max_leverage")) or "",
            "status_reason": "account upsert", "status_by": by, "status_at": repr(now),
        }
        open_positions = {s: p for s, p in positions.items() if p.quantity}
        record = {"t": "account", "at": now, "account": _account_record(account_id, fields),
                  "positions": position_map(open_positions),
                  "fill": None,
                  "fills": [{"fill_id": f.fill_id, "symbol": f.symbol, "side": f.side.value,
                             "quantity": str(f.quantity), "price": str(f.price),
                             "realized_pnl": str(realized), "source": "ingest",
                             "reference": None}
                            for f, realized in fill_records],
                  "state_change": {"scope": "account", "account_id": account_id, "old": None,
                                   "new": status, "reason": "account upsert", "by": by,
                                   "stop_id": None, "at": now}}
        self._commit_args(pipe, account_id, shard, expected="", fields=fields, record=record,
                          status=status,
                          set_positions={s: encode_position(p) for s, p in open_positions.items()})

    def set_account_state(self, account_id: str, state: TradingState, reason: str, by: str,
                          stop_id: str | None = None, only_from: Sequence[TradingState] | None = None,
                          extra_records: Sequence[dict] = ()) -> tuple[str | None, bool]:
        """Set an account's trading state; returns ``(state before, changed)``."""
        for _ in range(COMMIT_ATTEMPTS):
            fields = self.redis.hgetall(keys.account(account_id))
            if not fields:
                raise StateError("unknown_account", f"unknown account {account_id}")
            old = fields[b"status"].decode()
            if old == state.value or (only_from is not None
                                      and old not in {s.value for s in only_from}):
                return old, False
            now = self.clock.time()
            new = {"status": state.value, "status_reason": reason[:1000], "status_by": by,
                   "status_at": repr(now), "stop_id": stop_id or "", "updated_at": repr(now)}
            merged = {k.decode(): v.decode() for k, v in fields.items()} | new
            record = {"t": "account", "at": now,
                      "account": _account_record(account_id, merged), "positions": {},
                      "fill": None,
                      "state_change": {"scope": "account", "account_id": account_id, "old": old,
                                       "new": state.value, "reason": reason, "by": by,
                                       "stop_id": stop_id, "at": now}}
            result = self._commit(account_id, int(fields[b"shard"]),
                                  expected=fields[b"ver"].decode(), fields=new, record=record,
                                  status=state.value, extra_records=extra_records)
            if result[0] == b"OK":
                return old, True
        raise StateError("contention", f"account {account_id} changed too often")

    def non_active_accounts(self) -> list[str]:
        return sorted(m.decode() for m in self.redis.smembers(keys.NON_ACTIVE))

    def shard_account_ids(self, shard: int) -> list[str]:
        return [m.decode() for m in self.redis.lrange(keys.shard_members(shard), 0, -1)]

    def iter_account_ids(self) -> Iterator[str]:
        for shard in range(self.settings.shards):
            yield from self.shard_account_ids(shard)

    def _commit(self, account_id: str, shard: int, *, expected: str, fields: Mapping[str, str],
                record: dict, fill_id: str | None = None, status: str = "",
                set_positions: Mapping[str, str] | None = None,
                delete_positions: Sequence[str] = (), peak: str = "", day: str = "",
                extra_records: Sequence[dict] = ()) -> list:
        if not extra_records:
            return self._commit_args(self.redis, account_id, shard, expected=expected,
                                     fields=fields, record=record, fill_id=fill_id,
                                     status=status, set_positions=set_positions,
                                     delete_positions=delete_positions, peak=peak, day=day)
        pipe = self.redis.pipeline(transaction=True)
        self._commit_args(pipe, account_id, shard, expected=expected, fields=fields,
                          record=record, fill_id=fill_id, status=status,
                          set_positions=set_positions, delete_positions=delete_positions,
                          peak=peak, day=day)
        for extra in extra_records:
            self.journal_to(pipe, extra)
        return pipe.execute()[0]

    def _commit_args(self, client: Any, account_id: str, shard: int, *, expected: str,
                     fields: Mapping[str, str], record: dict, fill_id: str | None = None,
                     status: str = "", set_positions: Mapping[str, str] | None = None,
                     delete_positions: Sequence[str] = (), peak: str = "",
                     day: str = "") -> Any:
        """Call account_commit.lua on ``client`` (the connection or a pipeline)."""
        key_list, args = self._commit_keys_args(
            account_id, shard, expected=expected, fields=fields, record=record,
            fill_id=fill_id, status=status, set_positions=set_positions,
            delete_positions=delete_positions, peak=peak, day=day)
        return self._account_commit(keys=key_list, args=args, client=client)

    def _commit_keys_args(self, account_id: str, shard: int, *, expected: str,
                          fields: Mapping[str, str], record: dict, fill_id: str | None = None,
                          status: str = "", set_positions: Mapping[str, str] | None = None,
                          delete_positions: Sequence[str] = (), peak: str = "",
                          day: str = "") -> tuple[list, list]:
        """The KEYS and ARGV of account_commit.lua for one account change."""
        args: list[Any] = [expected, account_id, CHANGE_STREAM_MAXLEN,
                           self.settings.fill_idempotency_ttl_seconds, orjson.dumps(record),
                           peak, day, status, len(fields)]
        for k, v in fields.items():
            args += [k, v]
        set_positions = set_positions or {}
        args.append(len(set_positions))
        for k, v in set_positions.items():
            args += [k, v]
        args.append(len(delete_positions))
        args += list(delete_positions)
        key_list = [keys.account(account_id), keys.positions(account_id),
                    keys.shard_members(shard), keys.shard_changes(shard), keys.JOURNAL_STREAM,
                    keys.fill(fill_id) if fill_id else "", keys.shard_hwm(shard),
                    keys.shard_day(shard), keys.NON_ACTIVE, keys.shard_marks_version(shard)]
        return key_list, args

    # -- JOURNAL --

    def journal(self, record: dict) -> None:
        self.redis.xadd(keys.JOURNAL_STREAM, {"d": orjson.dumps(record)})

    @staticmethod
    def journal_to(pipe: redis.client.Pipeline, record: dict) -> None:
        pipe.xadd(keys.JOURNAL_STREAM, {"d": orjson.dumps(record)})


def _account_record(account_id: str, fields: Mapping[str, str]) -> dict[str, Any]:
    """The full account as the journal carries it to PostgreSQL."""
    return {
        "account_id": account_id,
        "balance": fields["balance"],
        "status": fields.get("status", "ACTIVE"),
        "peak_equity": fields.get("peak_equity") or fields["balance"],
        "daily_start_equity": fields.get("daily_start_equity") or fields["balance"],
        "max_leverage": fields.get("max_leverage") or None,
        "version": int(fields.get("ver") or 0) + 1,
    }


def position_map(positions: Mapping[str, Position]) -> dict[str, list[str]]:
    return {s: [str(p.quantity), str(p.entry_price)] for s, p in positions.items()}
