"""Arrange steps and probes shared by the pre-trade integration tests.

Arranging writes the hot state through the same ``StateStore`` calls the ingest tasks
use (symbols, accounts, fills, prices); every decision under test is then made by a
real worker process, reached through the broker.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field
from decimal import Decimal
from itertools import count
from typing import Any, Callable, Iterable

import orjson

from risk_tasks.engine.model import Fill, Side, SymbolSpec, TradingState
from risk_tasks.engine.validation import validate_account
from risk_tasks.state import keys

TASK_TIMEOUT = 20.0  # seconds a test waits for a worker's answer before failing


def D(value: Any) -> Decimal:
    return Decimal(str(value))


def wait_until(predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05,
               message: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{message} not reached within {timeout} s")
        time.sleep(interval)


def worker_id(worker: Any) -> str:
    """How a worker process signs its audit records (``PretradeService.worker``)."""
    return f"{socket.gethostname()}:{worker.process.pid}"


@dataclass
class World:
    """The state a test arranges, and the way it asks a worker for decisions."""

    rt: Any
    app: Any
    _ids: Iterable[int] = field(default_factory=count)

    # -- ARRANGE --

    def symbol(self, symbol: str = "BTC", imr: Any = "0.10", mmr: Any = "0.05",
               collar: Any = None, max_notional: Any = None) -> SymbolSpec:
        spec = SymbolSpec(symbol, D(imr), D(mmr), None if collar is None else D(collar),
                          None if max_notional is None else D(max_notional))
        self.rt.store.put_symbols([spec])
        return spec

    def account(self, account_id: str, balance: Any, **fields: Any) -> None:
        parsed = validate_account({"account_id": account_id, "balance": str(balance), **fields})
        self.rt.store.upsert_account(parsed)

    def prices(self, prices: dict[str, Any], ts: float | None = None) -> None:
        stamp = time.time() if ts is None else ts
        self.rt.store.ingest_prices({s: D(p) for s, p in prices.items()}, stamp)

    def fill(self, account_id: str, symbol: str, side: str, quantity: Any, price: Any) -> None:
        fill_id = f"f-{next(self._ids)}"
        self.rt.store.apply_fill(Fill(fill_id, account_id, symbol, Side(side), D(quantity),
                                      D(price)))

    def account_state(self, account_id: str, state: TradingState) -> None:
        self.rt.store.set_account_state(account_id, state, "test arrangement", "test")

    def platform_state(self, state: TradingState) -> None:
        self.rt.store.set_platform_state(state, "test arrangement", "test", None)

    def default_policies(self) -> int:
        """The five default policies, published from PostgreSQL as the workers get them."""
        from risk_tasks.policy_store import publish_policies

        return publish_policies(self.rt.sessions, self.rt.store)

    # -- ACT --

    def order(self, account_id: str = "A", symbol: str = "BTC", side: str = "BUY",
              quantity: Any = 1, price: Any = None, **extra: Any) -> dict[str, Any]:
        order = {"order_id": f"o-{next(self._ids)}", "account_id": account_id,
                 "symbol": symbol, "side": side, "quantity": quantity,
                 "order_type": "MARKET" if price is None else "LIMIT"}
        if price is not None:
            order["price"] = price
        order.update(extra)
        return order

    def check(self, order: Any) -> dict[str, Any]:
        return self.app.send_task("risk.check_order", [order]).get(timeout=TASK_TIMEOUT)

    def check_batch(self, orders: Any) -> list[dict[str, Any]]:
        return self.app.send_task("risk.check_order_batch", [orders]).get(timeout=TASK_TIMEOUT)

    def control(self, name: str, **kwargs: Any) -> dict[str, Any]:
        return self.app.send_task(f"risk.{name}", kwargs=kwargs).get(timeout=TASK_TIMEOUT)

    # -- PROBE --

    def audit_records(self) -> list[dict[str, Any]]:
        """Pre-trade audit records still in Redis (not yet drained), oldest first."""
        return [orjson.loads(f[b"d"]) for _, f in self.rt.redis.xrange(keys.AUDIT_STREAM)]

    def order_check_rows(self) -> list[Any]:
        from sqlalchemy import select

        from models.tables import OrderCheckRow

        with self.rt.sessions() as session:
            return list(session.scalars(select(OrderCheckRow).order_by(OrderCheckRow.id)))

    def rows(self, model: Any) -> list[Any]:
        from sqlalchemy import select

        with self.rt.sessions() as session:
            return list(session.scalars(select(model).order_by(*model.__table__.primary_key)))
