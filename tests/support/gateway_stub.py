"""An order-execution service on 127.0.0.1 for the HTTP gateway's tests.

It serves the protocol of ``risk_tasks/gateways/http.py`` (a reference implementation):
``POST /orders`` executes a reduce-only market order at the price the test set for the
symbol, once per ``client_order_id`` (a repeat answers the first execution);
``GET /orders/<id>`` answers an execution or 404; ``POST /accounts/<id>/cancel-all``
cancels the open orders the test gave the account. ``POST /webhook`` takes an alert
(the Slack-compatible sink) and keeps its body in ``webhooks``.

The test drives failures: ``fail_next(n, status)`` answers the next ``n`` calls with
``status``; ``fail_always(status)`` every call until ``heal()``; ``delay`` holds every
``POST /orders`` reply that many seconds *after* executing the order (so a worker killed
meanwhile leaves an order executed at the venue but unknown to the engine).
"""

from __future__ import annotations

import json
import threading
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote


class GatewayStub:
    def __init__(self, prices: dict[str, Any] | None = None) -> None:
        self.prices: dict[str, Decimal] = {s: Decimal(str(p)) for s, p in (prices or {}).items()}
        self.open_orders: dict[str, int] = {}
        self.executions: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, str]] = []
        self.webhooks: list[dict[str, Any]] = []
        self.failures: list[int] = []  # statuses of the next calls to fail
        self.always: int | None = None
        self.delay = 0.0
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    # -- CONTROL --

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> "GatewayStub":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def fail_next(self, n: int, status: int = 503) -> None:
        with self.lock:
            self.failures += [status] * n

    def fail_always(self, status: int = 503) -> None:
        self.always = status

    def heal(self) -> None:
        with self.lock:
            self.always = None
            self.failures.clear()

    def set_prices(self, prices: dict[str, Any]) -> None:
        self.prices.update({s: Decimal(str(p)) for s, p in prices.items()})

    def orders(self, account_id: str | None = None) -> list[dict[str, Any]]:
        """Executions, in order, optionally of one account."""
        with self.lock:
            found = list(self.executions.values())
        return [e for e in found if account_id is None or e["account_id"] == account_id]

    def count(self, method: str, prefix: str) -> int:
        with self.lock:
            return sum(1 for m, p in self.calls if m == method and p.startswith(prefix))

    # -- SERVER --

    def _failure(self, method: str, path: str) -> int | None:
        with self.lock:
            self.calls.append((method, path))
            if self.always is not None:
                return self.always
            if self.failures:
                return self.failures.pop(0)
        return None

    def _order(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        oid = body.get("client_order_id")
        if not isinstance(oid, str) or body.get("side") not in ("BUY", "SELL"):
            return 400, {"error": "bad order"}
        with self.lock:
            if oid in self.executions:
                return 200, self.executions[oid]
            price = self.prices.get(body.get("symbol"))
            if price is None:
                return 422, {"error": f"no market for {body.get('symbol')}"}
            execution = {"client_order_id": oid, "account_id": body.get("account_id"),
                         "symbol": body["symbol"], "side": body["side"],
                         "quantity": str(body["quantity"]), "price": str(price),
                         "status": "filled"}
            self.executions[oid] = execution
        return 200, execution

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def _reply(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _body(self) -> dict[str, Any]:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b"{}"
                try:
                    data = json.loads(raw)
                except ValueError:
                    return {}
                return data if isinstance(data, dict) else {}

            def do_GET(self) -> None:  # noqa: N802
                status = stub._failure("GET", self.path)
                if status is not None:
                    return self._reply(status, {"error": "injected"})
                if not self.path.startswith("/orders/"):
                    return self._reply(404, {"error": "not found"})
                with stub.lock:
                    found = stub.executions.get(unquote(self.path[len("/orders/"):]))
                self._reply(200, found) if found else self._reply(404, {"error": "unknown"})

            def do_POST(self) -> None:  # noqa: N802
                body = self._body()
                status = stub._failure("POST", self.path)
                if status is not None:
                    return self._reply(status, {"error": "injected"})
                if self.path == "/orders":
                    code, reply = stub._order(body)
                    if stub.delay and code == 200:
                        threading.Event().wait(stub.delay)
                    return self._reply(code, reply)
                if self.path == "/webhook":
                    with stub.lock:
                        stub.webhooks.append(body)
                    return self._reply(200, {"ok": True})
                if self.path.startswith("/accounts/") and self.path.endswith("/cancel-all"):
                    account = unquote(self.path[len("/accounts/"):-len("/cancel-all")])
                    with stub.lock:
                        canceled = stub.open_orders.pop(account, 0)
                    return self._reply(200, {"canceled": canceled})
                self._reply(404, {"error": "not found"})

        return Handler
