"""Pre-trade load for fault tests: threads (and processes) that call
``RiskClient.check_order`` in a loop and keep every outcome with its duration.

Each order has a unique id, so outcomes can be matched with the audit rows that reach
PostgreSQL. ``client_loop`` is importable by a spawned process (no test collection,
no fixtures), so a test can put load on from several processes at once.
"""

from __future__ import annotations

import dataclasses
import math
import os
import threading
import time
from dataclasses import dataclass
from itertools import count
from typing import Any, Callable, Sequence


@dataclass(frozen=True)
class Call:
    order_id: str
    account_id: str
    at: float  # wall clock when the call was made, s
    took: float  # seconds until the caller had its answer
    approved: bool
    reason: str | None
    client_side: bool  # the client's own fail-closed answer (no decision arrived)
    answered_id: str | None  # the order_id in the answer

    @property
    def decided(self) -> bool:
        return not self.client_side


def order(order_id: str, account_id: str, symbol: str = "BTC") -> dict[str, Any]:
    return {"order_id": order_id, "account_id": account_id, "symbol": symbol, "side": "BUY",
            "quantity": 1, "order_type": "MARKET"}


class Load:
    """``threads`` callers, each calling ``check_order`` until ``stop()``."""

    def __init__(self, client: Any, account_ids: Sequence[str], prefix: str = "o",
                 threads: int = 3, pause: float = 0.005) -> None:
        self.client = client
        self.account_ids = list(account_ids)
        self.prefix = prefix
        self.threads_wanted = threads
        self.pause = pause
        self.calls: list[Call] = []
        self._go = threading.Event()
        self._threads: list[threading.Thread] = []
        self._ids = count()

    def start(self) -> "Load":
        self._go.set()
        for n in range(self.threads_wanted):
            thread = threading.Thread(target=self._run, name=f"load-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def _run(self) -> None:
        while self._go.is_set():
            n = next(self._ids)
            account_id = self.account_ids[n % len(self.account_ids)]
            sent = order(f"{self.prefix}-{n}", account_id)
            at, started = time.time(), time.monotonic()
            result = self.client.check_order(sent)
            took = time.monotonic() - started
            self.calls.append(Call(sent["order_id"], account_id, at, took,
                                   bool(result.get("approved")), result.get("rejection_reason"),
                                   bool(result.get("client_side")), result.get("order_id")))
            if self.pause:
                time.sleep(self.pause)

    def stop(self, timeout: float = 30.0) -> list[Call]:
        """Stop every caller; a caller still inside ``check_order`` after ``timeout`` is hung."""
        self._go.clear()
        for thread in self._threads:
            thread.join(timeout)
        hung = [t.name for t in self._threads if t.is_alive()]
        if hung:
            raise AssertionError(f"callers hung in check_order: {hung}")
        return list(self.calls)

    def count(self, predicate: Callable[[Call], bool] = lambda c: True) -> int:
        return sum(1 for c in list(self.calls) if predicate(c))

    def since(self, at: float) -> list[Call]:
        return [c for c in list(self.calls) if c.at >= at]


def client_loop(broker_url: str, backend_url: str, prefix: str, account_ids: list[str],
                timeout: float, threads: int, stop_path: str, max_seconds: float = 120.0
                ) -> list[tuple]:
    """A client process: ``threads`` callers until ``stop_path`` exists; returns its calls
    as tuples (picklable)."""
    from celery import Celery

    from risk_tasks.client import RiskClient

    app = Celery("risk-load", set_as_current=False)
    app.config_from_object("celeryconfig")
    app.conf.update(broker_url=broker_url, result_backend=backend_url)
    deadline = time.monotonic() + max_seconds
    with RiskClient(app=app, timeout=timeout) as client:
        load = Load(client, account_ids, prefix=prefix, threads=threads).start()
        while not os.path.exists(stop_path) and time.monotonic() < deadline:
            time.sleep(0.05)
        calls = load.stop()
    app.close()
    return [dataclasses.astuple(c) for c in calls]


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) by the nearest-rank method; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


def latency_summary(calls: Sequence[Call]) -> dict[str, float]:
    """p50 / p99 / max of the answers that were decisions, in milliseconds."""
    took = [c.took * 1000 for c in calls if c.decided]
    return {"n": len(took), "p50_ms": round(percentile(took, 0.5), 2),
            "p99_ms": round(percentile(took, 0.99), 2),
            "max_ms": round(max(took), 2) if took else math.nan}
