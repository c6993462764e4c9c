"""The client a trading service uses to ask for pre-trade decisions.

    from risk_tasks.client import RiskClient

    risk = RiskClient(timeout=0.25)            # seconds
    decision = risk.check_order({...})
    if not decision["approved"]:
        reject(decision["rejection_reason"])   # "risk_timeout" when the engine was silent

It fails closed: when no decision arrives within the timeout the answer is a rejection
with ``rejection_reason="risk_timeout"`` (``"risk_unavailable"`` when the broker cannot
be reached), which a caller can tell apart from the engine's own reasons. The message
carries the same timeout as its expiry, so a worker never decides a check that its
caller has already given up on. Retrying with the same ``order_id`` is safe: the engine
answers a repeated order id with its first decision.

``RiskClient(coalesce=True)`` sends the concurrent ``check_order`` calls of one process
as batches (``risk.check_order_batch``), gathered over ``window`` seconds (0.5 ms by
default) or until ``max_batch`` orders: one message per batch instead of one per order,
which is how one process goes past a thousand checks per second. Callers see no change.
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Sequence

from celery import Celery
from celery.exceptions import TimeoutError as CeleryTimeout

TIMEOUT_REASON = "risk_timeout"
UNAVAILABLE_REASON = "risk_unavailable"


def fail_closed(order: Any, reason: str, message: str, started: float) -> dict[str, Any]:
    """A rejection made by the client itself, never by the engine."""
    ids = order if isinstance(order, dict) else {}
    return {
        "order_id": ids.get("order_id"),
        "account_id": ids.get("account_id"),
        "approved": False,
        "violations": [message],
        "rejection_reason": reason,
        "message": message,
        "post_trade_metrics": {},
        "processing_time_us": int((time.perf_counter() - started) * 1e6),
        "client_side": True,
    }


class RiskClient:
    def __init__(self, app: Celery | None = None, timeout: float = 1.0, coalesce: bool = False,
                 window: float = 0.0005, max_batch: int = 200, waiters: int = 8) -> None:
        if app is None:
            from risk_tasks.app import app as default_app

            app = default_app
        self.app = app
        self.timeout = timeout
        self.coalesce = coalesce
        self.window = window
        self.max_batch = max_batch
        self._pending: queue.SimpleQueue[tuple[Any, Future] | None] = queue.SimpleQueue()
        self._waiters: ThreadPoolExecutor | None = None
        self._dispatcher: threading.Thread | None = None
        self._closed = False
        if coalesce:
            self._waiters = ThreadPoolExecutor(max_workers=waiters,
                                               thread_name_prefix="risk-client-wait")
            self._dispatcher = threading.Thread(target=self._dispatch, name="risk-client-batch",
                                                daemon=True)
            self._dispatcher.start()

    # -- PUBLIC --

    def check_order(self, order: dict, timeout: float | None = None) -> dict[str, Any]:
        """The decision for one order, or a fail-closed rejection after ``timeout`` s."""
        timeout = self.timeout if timeout is None else timeout
        started = time.perf_counter()
        if self.coalesce:
            future: Future = Future()
            self._pending.put((order, future))
            try:
                return future.result(timeout=timeout)
            except FutureTimeout:
                return fail_closed(order, TIMEOUT_REASON,
                                   f"no risk decision within {timeout * 1000:.0f} ms", started)
        return self._call("risk.check_order", [order], timeout, started,
                          lambda msg, reason: fail_closed(order, reason, msg, started))

    def check_orders(self, orders: Sequence[dict], timeout: float | None = None) -> list[dict]:
        """Decisions for many orders in one message (``risk.check_order_batch``)."""
        timeout = self.timeout if timeout is None else timeout
        started = time.perf_counter()
        return self._call("risk.check_order_batch", [list(orders)], timeout, started,
                          lambda msg, reason: [fail_closed(o, reason, msg, started)
                                               for o in orders])

    def get_risk_metrics(self, account_id: str, timeout: float | None = None) -> dict[str, Any]:
        timeout = self.timeout if timeout is None else timeout
        result = self.app.send_task("risk.get_risk_metrics", args=[account_id],
                                    expires=timeout, argsrepr="", kwargsrepr="")
        return result.get(timeout=timeout)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._dispatcher is not None:
            self._pending.put(None)
            self._dispatcher.join(timeout=2)
        if self._waiters is not None:
            self._waiters.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> "RiskClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- INTERNALS --

    def _call(self, task: str, args: list, timeout: float, started: float, on_failure):  # noqa: ANN001, ANN202
        try:
            result = self.app.send_task(task, args=args, expires=timeout, argsrepr="",
                                        kwargsrepr="")
        except Exception as exc:  # noqa: BLE001 - any broker failure fails closed
            return on_failure(f"risk engine unavailable: {exc.__class__.__name__}",
                              UNAVAILABLE_REASON)
        remaining = timeout - (time.perf_counter() - started)
        try:
            return result.get(timeout=max(remaining, 0.001), interval=0.001)
        except CeleryTimeout:
            return on_failure(f"no risk decision within {timeout * 1000:.0f} ms", TIMEOUT_REASON)
        except Exception as exc:  # noqa: BLE001 - a failed task or a lost backend: fail closed
            return on_failure(f"risk engine error: {exc.__class__.__name__}: {exc}"[:300],
                              UNAVAILABLE_REASON)

    def _dispatch(self) -> None:
        """Gather concurrent calls for ``window`` s, send them as one batch."""
        while True:
            first = self._pending.get()
            if first is None:
                return
            batch = [first]
            deadline = time.perf_counter() + self.window
            while len(batch) < self.max_batch:
                remaining = deadline - time.perf_counter()
                try:
                    item = self._pending.get(timeout=remaining) if remaining > 0 \
                        else self._pending.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._pending.put(None)
                    break
                batch.append(item)
            self._waiters.submit(self._send_batch, batch)

    def _send_batch(self, batch: list[tuple[Any, Future]]) -> None:
        orders = [order for order, _ in batch]
        results = self.check_orders(orders, timeout=self.timeout)
        for (_, future), result in zip(batch, results):
            if not future.done():
                future.set_result(result)
