"""The paper gateway: fills at the current mark price, in Redis, with no venue.

There is no order book in paper trading, so ``cancel_all_orders`` cancels nothing
(returns 0). A close is "executed" by writing its execution under its request id
(``SET NX``), at the mark the state store holds at that moment, and then applied like
any other fill; a repeat of the request id returns the stored execution, so a retry
after a crash applies the first price and quantity, once.
"""

from __future__ import annotations

from decimal import Decimal

import orjson

from risk_tasks.engine.model import Side
from risk_tasks.failures import NoPrice
from risk_tasks.gateways.base import Execution, ExecutionGateway
from risk_tasks.state import keys
from risk_tasks.state.codec import decode_mark

EXECUTION_TTL = 30 * 86_400  # seconds; as long as a fill id is remembered


def execution_key(request_id: str) -> str:
    return f"risk:gw:paper:{request_id}"


class PaperGateway(ExecutionGateway):
    name = "paper"

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
