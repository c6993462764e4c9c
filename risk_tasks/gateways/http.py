"""The HTTP gateway: JSON over HTTP to an order-execution service at ``RISK_GATEWAY_URL``.

The protocol (what a venue adapter must serve; ``tests/support/gateway_stub.py`` is a
reference implementation):

``POST /orders`` with ``{"client_order_id", "account_id", "symbol", "side",
"quantity", "type": "MARKET", "reduce_only": true}`` (quantity a decimal string)
answers ``200`` with ``{"client_order_id", "symbol", "side", "quantity", "price",
"status": "filled"}``; the service executes a ``client_order_id`` at most once and
answers a repeat with the first execution.

``GET /orders/<client_order_id>`` answers the execution, or ``404`` if that id was
never executed.

``POST /accounts/<account_id>/cancel-all`` with ``{"request_id"}`` answers
``{"canceled": n}``.

Errors: a timeout, a connection error, ``408``, ``429`` or any ``5xx`` is a
``TransientGatewayError`` (the task retries with back-off); any other ``4xx``, or a
reply that does not have the shape above, is a ``PermanentGatewayError`` (the task is
dead-lettered at once). Every call has ``RISK_GATEWAY_TIMEOUT_SECONDS`` for connecting
and for reading.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import quote

import requests

from risk_tasks.engine.model import Side
from risk_tasks.gateways.base import (
    Execution, ExecutionGateway, PermanentGatewayError, TransientGatewayError,
)
from risk_tasks.state.store import StateStore

RETRYABLE_STATUS = {408, 429}


class HttpGateway(ExecutionGateway):
    name = "http"

    def __init__(self, store: StateStore, base_url: str, timeout: float,
                 session: requests.Session | None = None) -> None:
        super().__init__(store)
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.http = session or requests.Session()

    # -- VENUE --

    def cancel_all_orders(self, account_id: str, request_id: str) -> int:
        reply = self._call("POST", f"/accounts/{quote(account_id, safe='')}/cancel-all",
                           {"request_id": request_id})
        canceled = reply.get("canceled") if isinstance(reply, dict) else None
        if isinstance(canceled, bool) or not isinstance(canceled, int) or canceled < 0:
            raise PermanentGatewayError(f"cancel-all answered {reply!r}")
        return canceled

    def _execute(self, account_id: str, symbol: str, side: Side, quantity: Decimal,
                 request_id: str) -> Execution:
        reply = self._call("POST", "/orders", {
            "client_order_id": request_id, "account_id": account_id, "symbol": symbol,
            "side": side.value, "quantity": str(quantity), "type": "MARKET",
            "reduce_only": True})
        return self._execution(reply, request_id, account_id)

    def lookup(self, request_id: str, account_id: str) -> Execution | None:
        reply = self._call("GET", f"/orders/{quote(request_id, safe='')}", None,
                           missing_ok=True)
        return None if reply is None else self._execution(reply, request_id, account_id)

    # -- TRANSPORT --

    def _call(self, method: str, path: str, body: dict | None,
              missing_ok: bool = False) -> Any:
        url = self.base_url + path
        try:
            response = self.http.request(method, url, json=body,
                                         timeout=(self.timeout, self.timeout))
        except (requests.Timeout, requests.ConnectionError) as exc:
            raise TransientGatewayError(f"{method} {path}: {exc.__class__.__name__}") from exc
        except requests.RequestException as exc:
            raise PermanentGatewayError(f"{method} {path}: {exc}") from exc
        status = response.status_code
        if missing_ok and status == 404:
            return None
        if status >= 500 or status in RETRYABLE_STATUS:
            raise TransientGatewayError(f"{method} {path}: HTTP {status}")
        if status >= 400:
            raise PermanentGatewayError(f"{method} {path}: HTTP {status} {response.text[:300]}")
        try:
            return response.json()
        except ValueError as exc:
            raise PermanentGatewayError(f"{method} {path}: reply is not JSON") from exc

    @staticmethod
    def _execution(reply: Any, request_id: str, account_id: str) -> Execution:
        try:
            if reply.get("status") != "filled" or reply.get("client_order_id") != request_id:
                raise ValueError("not a fill of this request")
            return Execution(request_id, account_id, str(reply["symbol"]), Side(reply["side"]),
                             Decimal(str(reply["quantity"])), Decimal(str(reply["price"])))
        except (AttributeError, KeyError, ValueError, InvalidOperation) as exc:
            raise PermanentGatewayError(f"order {request_id}: unusable reply {reply!r}") from exc
