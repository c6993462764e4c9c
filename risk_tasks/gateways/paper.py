"""The paper gateway: fills at the current mark price, in Redis, with no venue.

There is no order book in paper trading, so ``cancel_all_orders`` cancels nothing
(returns 0). A close is "executed" by writing its execution under its request id
(``SET NX``), at the mark the state store holds at that moment, and then applied like
any other fill; a repeat of the request id returns the stored execution, so a retry
after a crash applies the first price and quantity, once.

Since nothing leaves Redis, a close can also be done in one step (``close_and_record``):
one script checks the caller's lease and that the mark is still the one the caller read,
writes the execution, applies the fill with ``account_commit.lua`` (only if the account
is still at the version the caller read) and saves the caller's progress and journal
records, all or nothing. A crash leaves either the whole step or no trace of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Callable

import orjson
from redis.exceptions import NoScriptError

from risk_tasks.engine.model import Side
from risk_tasks.failures import NoPrice
from risk_tasks.gateways.base import Execution, ExecutionGateway
from risk_tasks.state import keys
from risk_tasks.state.codec import decode_mark
from risk_tasks.state.store import _script

EXECUTION_TTL = 30 * 86_400  # seconds; as long as a fill id is remembered


def execution_key(request_id: str) -> str:
    return f"risk:gw:paper:{request_id}"


# account_commit.lua as a function, then the step around it.
_CLOSE_AND_RECORD = "local function account_commit(KEYS, ARGV)\n" + _script(
    "account_commit.lua") + """end
-- KEYS: 1-10 those of account_commit.lua, 11 lease, 12 execution, 13 progress, 14 prices,
--       15 config version, 16 the key a final close deletes (an episode guard)
-- ARGV: 1 lease token, 2 lease ttl (ms), 3 symbol, 4 its mark as the caller read it,
--       5 execution JSON, 6 execution ttl (s), 7 progress JSON, 8 progress ttl (s),
--       9 n journal records, 10 m marks to check besides ARGV 3-4 (a final close: every
--       held symbol's), 11 '' or, for a final close, the value KEYS[16] must hold to be
--       deleted, 12 the config version as the caller read it ('' none; checked only by a
--       final close), then the n records, then m (symbol, mark) pairs, then the ARGV of
--       account_commit.lua
-- Returns {'LEASE'}, {'MARK'} (a mark, or for a final close the config, moved),
-- {'EXECUTED'} (this request id has an execution already), account_commit.lua's
-- {'RETRY'} or {'DUP'}, or, when done, {'OK', account hash, positions hash, marks of
-- the held symbols, config version}; a final close ends the action instead (releases
-- the lease, deletes KEYS[16] if it still holds ARGV[11]) and returns {'OK'}. Only 'OK'
-- writes anything.
if redis.call('GET', KEYS[11]) ~= ARGV[1] then return {'LEASE'} end
if redis.call('HGET', KEYS[14], ARGV[3]) ~= ARGV[4] then return {'MARK'} end
local n, m, final = tonumber(ARGV[9]), tonumber(ARGV[10]), ARGV[11]
local at = 13 + n
if m > 0 then
  local symbols = {}
  for j = 0, m - 1 do symbols[j + 1] = ARGV[at + 2 * j] end
  local now = redis.call('HMGET', KEYS[14], unpack(symbols))
  for j = 0, m - 1 do
    if now[j + 1] ~= ARGV[at + 2 * j + 1] then return {'MARK'} end
  end
end
if final ~= '' and (redis.call('GET', KEYS[15]) or '') ~= ARGV[12] then return {'MARK'} end
if redis.call('EXISTS', KEYS[12]) == 1 then return {'EXECUTED'} end
local ck, ca = {}, {}
for j = 1, 10 do ck[j] = KEYS[j] end
for j = at + 2 * m, #ARGV do ca[#ca + 1] = ARGV[j] end
local r = account_commit(ck, ca)
if r[1] ~= 'OK' then return r end
redis.call('SET', KEYS[12], ARGV[5], 'EX', ARGV[6])
redis.call('SET', KEYS[13], ARGV[7], 'EX', ARGV[8])
for j = 13, 12 + n do redis.call('XADD', KEYS[5], '*', 'd', ARGV[j]) end
if final ~= '' then
  redis.call('DEL', KEYS[11])
  if redis.call('GET', KEYS[16]) == final then redis.call('DEL', KEYS[16]) end
  return {r[1]}
end
redis.call('PEXPIRE', KEYS[11], ARGV[2])
-- the account as it is now, as the caller's next read would see it
local positions = redis.call('HGETALL', KEYS[2])
local symbols = {}
for i = 1, #positions, 2 do symbols[#symbols + 1] = positions[i] end
local marks = {}
if #symbols > 0 then marks = redis.call('HMGET', KEYS[14], unpack(symbols)) end
return {r[1], redis.call('HGETALL', KEYS[1]), positions, marks, redis.call('GET', KEYS[15])}
"""


@dataclass(frozen=True, slots=True)
class FinalClose:
    """What makes a close the action's last: it is done only if none of ``marks`` (every
    held symbol's, as the caller read them) nor the config version (``config``, raw;
    None when there was none) moved, so the caller's plan, made on the account as the
    fill leaves it, still holds. It then releases the lease and deletes ``end_key`` if
    it still holds ``end_value`` (the liquidation's episode guard)."""

    marks: dict[str, bytes]
    config: bytes | None
    end_key: str
    end_value: str


class PaperGateway(ExecutionGateway):
    name = "paper"
    local = True

    def __init__(self, store) -> None:  # noqa: ANN001 - StateStore
        super().__init__(store)
        self._close_and_record = store.redis.register_script(_CLOSE_AND_RECORD)

    def close_and_record(self, execution: Execution, fields: dict, raw_position: bytes | None,
                         raw_mark: bytes, source: str, reference: str, lease,  # noqa: ANN001
                         progress_key: str, progress: bytes, progress_ttl: int,
                         records: list[bytes], then: Callable[[Any], None] | None = None,
                         final: FinalClose | None = None) -> list:
        """Execute ``execution`` (a close at the mark ``raw_mark`` the caller read), apply
        it to the account as the caller read it (``fields``, ``raw_position``) and save
        the caller's progress and records, in one script, under the caller's lease.
        Returns ``[b"OK", account, positions, marks, config version]`` (all done; the
        account as it is after the fill), ``[b"LEASE"]`` (lost: nothing done), or, with
        nothing done either, ``[b"MARK"]``/``[b"RETRY"]`` (the mark or the account moved:
        read again) or ``[b"EXECUTED"]``/``[b"DUP"]`` (done before: take the step by
        step path). ``then(pipeline)`` queues commands sent in the same round trip, after
        the script (they run whatever it returns). With ``final`` the close also ends the
        action (see ``FinalClose``) and a done close returns only ``[b"OK"]``; a moved
        mark or config is ``[b"MARK"]``."""
        script_keys, args = self._script_args(execution, fields, raw_position, raw_mark,
                                              source, reference, lease, progress_key,
                                              progress, progress_ttl, records, final)
        if then is None:
            return self._close_and_record(keys=script_keys, args=args)
        pipe = self.store.redis.pipeline(transaction=False)
        pipe.evalsha(self._close_and_record.sha, len(script_keys), *script_keys, *args)
        then(pipe)
        reply = pipe.execute(raise_on_error=False)[0]
        if isinstance(reply, NoScriptError):  # Redis restarted: nothing ran; load and run it
            return self._close_and_record(keys=script_keys, args=args)
        if isinstance(reply, Exception):
            raise reply
        return reply

    def close_and_record_many(self, calls: list[dict]) -> list:
        """``close_and_record`` of each of ``calls`` (their arguments by name), sent in
        one pipelined round trip: the closes of a batch's episodes (different accounts,
        each under its own lease). Each one's reply, or the exception it raised; if the
        round trip itself fails, that exception is every one's."""
        pipe = self.store.redis.pipeline(transaction=False)
        firsts: list[int | Exception] = []
        for call in calls:
            try:
                script_keys, args = self._script_args(
                    **{k: v for k, v in call.items() if k != "then"})
            except Exception as exc:  # noqa: BLE001 - that close's own failure, unsent
                firsts.append(exc)
                continue
            firsts.append(len(pipe))
            pipe.evalsha(self._close_and_record.sha, len(script_keys), *script_keys, *args)
            if call.get("then") is not None:
                call["then"](pipe)
        try:
            replies = pipe.execute(raise_on_error=False) if len(pipe) else []
        except Exception as exc:  # noqa: BLE001 - the connection: every close failed with it
            return [first if isinstance(first, Exception) else exc for first in firsts]
        out: list = []
        for call, first in zip(calls, firsts):
            reply = first if isinstance(first, Exception) else replies[first]
            if isinstance(reply, NoScriptError):  # Redis restarted: nothing ran
                try:
                    reply = self.close_and_record(**call)
                except Exception as exc:  # noqa: BLE001 - that close's own failure
                    reply = exc
            out.append(reply)
        return out

    def _script_args(self, execution: Execution, fields: dict, raw_position: bytes | None,
                     raw_mark: bytes, source: str, reference: str, lease,  # noqa: ANN001
                     progress_key: str, progress: bytes, progress_ttl: int,
                     records: list[bytes], final: FinalClose | None) -> tuple[list, list]:
        from risk_tasks.engine.model import Fill

        fill = Fill(execution.request_id, execution.account_id, execution.symbol,
                    execution.side, execution.quantity, execution.price)
        commit_keys, commit_args = self.store.fill_change(fill, fields, raw_position, source,
                                                          reference)[:2]
        script_keys = [*commit_keys, lease.key, execution_key(execution.request_id),
                       progress_key, keys.PRICES, keys.CONFIG_VERSION,
                       lease.key if final is None else final.end_key]
        checks = [] if final is None else [x for pair in final.marks.items() for x in pair]
        args = [lease.token, lease.ttl_ms, execution.symbol, raw_mark,
                orjson.dumps(execution.to_dict()), EXECUTION_TTL, progress, progress_ttl,
                len(records), len(checks) // 2, "" if final is None else final.end_value,
                b"" if final is None or final.config is None else final.config,
                *records, *checks, *commit_args]
        return script_keys, args

    def cancel_all_orders(self, account_id: str, request_id: str) -> int:
        return 0

    def _execute(self, account_id: str, symbol: str, side: Side, quantity: Decimal,
                 request_id: str) -> Execution:
        earlier = self.lookup(request_id, account_id)
        if earlier is not None:
            return earlier
        mark = decode_mark(self.store.redis.hget(keys.PRICES, symbol))
        if mark is None:
            raise NoPrice(f"no mark price for {symbol}: cannot fill at mark")
        execution = Execution(request_id, account_id, symbol, side, quantity, mark.price)
        if self.store.redis.set(execution_key(request_id), orjson.dumps(execution.to_dict()),
                                nx=True, ex=EXECUTION_TTL):
            return execution
        return self.lookup(request_id, account_id) or execution  # lost a race: theirs

    def lookup(self, request_id: str, account_id: str) -> Execution | None:
        raw = self.store.redis.get(execution_key(request_id))
        return None if raw is None else Execution.from_dict(orjson.loads(raw))
