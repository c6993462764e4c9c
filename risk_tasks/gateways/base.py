"""The execution gateway: how liquidation and unwinding cancel orders and close positions.

A gateway talks to a venue (``_execute``, ``lookup``, ``cancel_all_orders``); the fill
the venue reports is then applied to the hot state through ``StateStore.apply_fill``,
the one path every fill takes, with ``source`` ("liquidation" or "unwind") and the
episode or stop id as ``reference``.

Every order carries a ``request_id`` chosen by the caller and deterministic per
(episode or stop, symbol, step). It is the venue's client order id and the fill's
``fill_id``, so:

- the venue executes a request id at most once (a repeat returns the first execution);
- the state store applies a fill id at most once;
- after a crash, ``lookup(request_id)`` tells whether an order that was in flight was
  executed, and with what price and quantity.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from risk_tasks.engine.model import Fill, Side
from risk_tasks.failures import PermanentError, TransientError
from risk_tasks.state.store import StateError, StateStore


class TransientGatewayError(TransientError):
    """The venue did not answer in time, or answered 5xx: retry later."""


class PermanentGatewayError(PermanentError):
    """The venue refused the request (4xx) or answered nonsense: retrying cannot help."""


@dataclass(frozen=True, slots=True)
class Execution:
    """One order as the venue executed it. ``quantity`` > 0; ``side`` is the order's."""

    request_id: str
    account_id: str
    symbol: str
    side: Side
    quantity: Decimal
    price: Decimal

    def to_dict(self) -> dict[str, str]:
        return {"request_id": self.request_id, "account_id": self.account_id,
                "symbol": self.symbol, "side": self.side.value,
                "quantity": str(self.quantity), "price": str(self.price)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Execution":
        return cls(str(data["request_id"]), str(data["account_id"]), str(data["symbol"]),
                   Side(data["side"]), Decimal(str(data["quantity"])),
                   Decimal(str(data["price"])))


class ExecutionGateway(ABC):
    """Cancel orders and close positions of an account; apply what was filled."""

    name = "abstract"
    local = False
    """True when there is no venue (paper): cancelling orders does nothing and a close can
    be executed, applied and recorded in one Redis script (``close_and_record``)."""

    def __init__(self, store: StateStore) -> None:
        self.store = store

    # -- VENUE --

    @abstractmethod
    def cancel_all_orders(self, account_id: str, request_id: str) -> int:
        """Cancel every open order of the account; the number canceled."""

    @abstractmethod
    def _execute(self, account_id: str, symbol: str, side: Side, quantity: Decimal,
                 request_id: str) -> Execution:
        """Send a reduce-only market order; the execution (idempotent per request id)."""

    @abstractmethod
    def lookup(self, request_id: str, account_id: str) -> Execution | None:
        """The execution of an earlier request, or None if the venue never executed it."""

    # -- STATE --

    def close_position(self, account_id: str, symbol: str, side: Side, quantity: Decimal,
                       request_id: str, source: str, reference: str) -> Execution:
        """Close ``quantity`` of a position (``side`` opposite to it) and apply the fill."""
        execution = self._execute(account_id, symbol, side, quantity, request_id)
        if (execution.account_id, execution.symbol, execution.side) != (account_id, symbol, side) or \
                not 0 < execution.quantity <= quantity or execution.price <= 0:
            raise PermanentGatewayError(
                f"{self.name} gateway executed {execution} for a request to "
                f"{side.value} {quantity} {symbol}")
        self.apply(execution, source, reference)
        return execution

    def apply(self, execution: Execution, source: str, reference: str) -> dict[str, Any]:
        """Apply an execution to the account (a second time is a no-op, per fill id)."""
        fill = Fill(execution.request_id, execution.account_id, execution.symbol,
                    execution.side, execution.quantity, execution.price)
        try:
            return self.store.apply_fill(fill, source=source, reference=reference)
        except StateError as exc:
            if exc.code == "contention":
                raise TransientGatewayError(exc.message) from exc
            raise PermanentGatewayError(f"fill {execution.request_id}: {exc.message}") from exc
