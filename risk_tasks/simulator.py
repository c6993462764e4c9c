"""Market and account-population simulator: drives the whole system end to end.

- ``Market``: geometric random-walk mark prices with occasional shocks.
- ``population``: accounts with about ``avg_positions`` positions each over the symbols,
  at leverages spread from cautious to near the limit, so that shocks breach some.
- ``OrderFlow``: realistic pre-trade requests for that population.
- ``Simulation``: publishes prices through ``risk.ingest_prices`` every tick, sends
  fills through ``risk.apply_fill``, and keeps a steady ``check_order`` load through
  ``RiskClient``, reporting what the callers saw.

Everything is seeded, so a run can be repeated.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Callable, Iterator

from risk_tasks.engine.model import Fill, Side, SymbolSpec

MAJORS = ["BTC", "ETH", "SOL", "XRP", "BNB", "ADA", "DOGE", "AVAX", "DOT", "LINK"]


def symbol_names(n: int) -> list[str]:
    return [MAJORS[i] if i < len(MAJORS) else f"S{i:03d}" for i in range(n)]


def symbol_specs(names: list[str]) -> list[SymbolSpec]:
    """Majors at 20x (imr 5 %), the rest at 10x, collars of 5 %, notional caps of 5M."""
    specs = []
    for i, name in enumerate(names):
        major = i < 3
        specs.append(SymbolSpec(
            name,
            imr=Decimal("0.05") if major else Decimal("0.10"),
            mmr=Decimal("0.025") if major else Decimal("0.05"),
            price_collar=Decimal("0.05"),
            max_order_notional=Decimal("5000000"),
        ))
    return specs


def _round_price(value: float) -> Decimal:
    digits = max(2, 6 - int(math.floor(math.log10(max(value, 1e-9)))))
    return Decimal(f"{value:.{min(digits, 8)}f}")


class Market:
    """Random-walk marks: ``vol`` is the per-step standard deviation of log returns."""

    def __init__(self, names: list[str], seed: int = 7, vol: float = 0.002) -> None:
        self.rng = random.Random(seed)
        self.names = names
        self.vol = vol
        self.prices = {n: 10 ** self.rng.uniform(0, 4.5) for n in names}
        if "BTC" in self.prices:
            self.prices["BTC"] = 60000.0
        if "ETH" in self.prices:
            self.prices["ETH"] = 3000.0

    def step(self) -> dict[str, Decimal]:
        for name in self.names:
            self.prices[name] *= math.exp(self.rng.gauss(0, self.vol))
        return self.marks()

    def shock(self, symbol: str, move: float) -> dict[str, Decimal]:
        self.prices[symbol] *= 1 + move
        return self.marks()

    def marks(self) -> dict[str, Decimal]:
        return {n: _round_price(p) for n, p in self.prices.items()}


def population(n_accounts: int, market: Market, avg_positions: float = 3.0, seed: int = 11,
               prefix: str = "acct", max_leverage: float = 8.0
               ) -> Iterator[tuple[dict[str, Any], list[Fill]]]:
    """Accounts (``validate_account`` form) with the fills that open their positions."""
    rng = random.Random(seed)
    names = market.names
    marks = market.marks()
    for i in range(n_accounts):
        account_id = f"{prefix}{i:07d}"
        balance = Decimal(int(10 ** rng.uniform(3.5, 6)))
        k = max(1, min(len(names), int(rng.expovariate(1 / avg_positions)) + 1)) \
            if avg_positions >= 1 else 0
        leverage = rng.uniform(0.2, max_leverage)
        fills = []
        for j, symbol in enumerate(rng.sample(names, k)):
            price = marks[symbol] * Decimal(str(round(rng.uniform(0.97, 1.03), 4)))
            notional = float(balance) * leverage / k
            quantity = Decimal(f"{notional / float(price):.4f}")
            if quantity <= 0:
                continue
            side = Side.BUY if rng.random() < 0.55 else Side.SELL
            fills.append(Fill(f"{account_id}-open-{j}", account_id, symbol, side, quantity, price))
        yield {"account_id": account_id, "balance": balance}, fills


class OrderFlow:
    """Pre-trade requests for a population: mostly MARKET, some LIMIT near the mark."""

    def __init__(self, account_ids: list[str], market: Market, seed: int = 13) -> None:
        self.rng = random.Random(seed)
        self.account_ids = account_ids
        self.market = market
        self.counter = 0
        self.lock = threading.Lock()

    def next(self) -> dict[str, Any]:
        with self.lock:
            self.counter += 1
            n = self.counter
            rng = self.rng
            account_id = rng.choice(self.account_ids)
            symbol = rng.choice(self.market.names)
            price = self.market.prices[symbol]
            limit = rng.random() < 0.3
        order = {
            "order_id": f"sim-{int(time.time())}-{n}",
            "account_id": account_id,
            "symbol": symbol,
            "side": "BUY" if rng.random() < 0.5 else "SELL",
            "quantity": float(f"{max(rng.uniform(500, 20000) / price, 1e-4):.4f}"),
            "order_type": "LIMIT" if limit else "MARKET",
        }
        if limit:
            order["price"] = float(_round_price(price * rng.uniform(0.995, 1.005)))
        return order


@dataclass
class Stats:
    """What the simulated callers saw, over a sliding window."""

    window: float = 10.0
    samples: deque = field(default_factory=deque)  # (time, latency s, approved, reason)
    total: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, latency: float, result: dict) -> None:
        now = time.monotonic()
        with self.lock:
            self.total += 1
            self.samples.append((now, latency, result["approved"], result["rejection_reason"]))
            while self.samples and self.samples[0][0] < now - self.window:
                self.samples.popleft()

    def summary(self) -> dict[str, Any]:
        with self.lock:
            items = list(self.samples)
        if not items:
            return {"rate": 0.0, "approved": 0.0, "p50_ms": None, "p99_ms": None, "reasons": {}}
        span = max(items[-1][0] - items[0][0], 1e-3)
        lat = sorted(i[1] for i in items)
        reasons: dict[str, int] = {}
        for item in items:
            if item[3]:
                reasons[item[3]] = reasons.get(item[3], 0) + 1
        return {
            "rate": len(items) / span if len(items) > 1 else 0.0,
            "approved": sum(1 for i in items if i[2]) / len(items),
            "p50_ms": lat[len(lat) // 2] * 1000,
            "p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000,
            "reasons": reasons,
        }


class Simulation:
    """Live driver: prices every ``tick`` s, a fill now and then, checks at ``rate``/s."""

    def __init__(self, app: Any, market: Market, account_ids: list[str], rate: float = 50,
                 tick: float = 1.0, shock_every: float = 30.0, shock_size: float = -0.08,
                 callers: int = 4, timeout: float = 1.0, seed: int = 17) -> None:
        from risk_tasks.client import RiskClient

        self.app = app
        self.market = market
        self.account_ids = account_ids
        self.flow = OrderFlow(account_ids, market, seed)
        self.client = RiskClient(app, timeout=timeout)
        self.rate = rate
        self.tick = tick
        self.shock_every = shock_every
        self.shock_size = shock_size
        self.callers = callers
        self.stats = Stats()
        self.stop = threading.Event()
        self.rng = random.Random(seed)
        self.fills_sent = 0

    def run(self, duration: float, report: Callable[[dict], None] | None = None,
            report_every: float = 2.0) -> dict:
        threads = [threading.Thread(target=self._caller, args=(i,), daemon=True)
                   for i in range(self.callers)]
        for t in threads:
            t.start()
        started = time.monotonic()
        next_tick = next_report = started
        next_shock = started + self.shock_every
        try:
            while not self.stop.is_set() and time.monotonic() - started < duration:
                now = time.monotonic()
                if now >= next_tick:
                    marks = self.market.step()
                    if self.shock_every and now >= next_shock:
                        symbol = self.rng.choice(self.market.names[:3])
                        marks = self.market.shock(symbol, self.shock_size)
                        next_shock = now + self.shock_every
                    self.app.send_task("risk.ingest_prices",
                                       args=[{k: str(v) for k, v in marks.items()}, time.time()])
                    self._maybe_fill()
                    next_tick += self.tick
                if report and now >= next_report:
                    report(self.summary(now - started))
                    next_report += report_every
                time.sleep(0.01)
        finally:
            self.stop.set()
            for t in threads:
                t.join(timeout=2)
            self.client.close()
        return self.summary(time.monotonic() - started)

    def summary(self, elapsed: float) -> dict:
        return {"elapsed_s": round(elapsed, 1), "checks": self.stats.total,
                "fills_sent": self.fills_sent, **self.stats.summary()}

    def _maybe_fill(self) -> None:
        if self.rng.random() < 0.5:
            order = self.flow.next()
            price = order.get("price") or float(self.market.marks()[order["symbol"]])
            self.app.send_task("risk.apply_fill", args=[{
                "fill_id": f"simfill-{order['order_id']}", "account_id": order["account_id"],
                "symbol": order["symbol"], "side": order["side"],
                "quantity": order["quantity"], "price": price}])
            self.fills_sent += 1

    def _caller(self, index: int) -> None:
        per_caller = self.rate / self.callers
        interval = 1.0 / per_caller if per_caller > 0 else 1.0
        next_at = time.monotonic() + index * interval / self.callers
        while not self.stop.is_set():
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            next_at += interval
            order = self.flow.next()
            started = time.perf_counter()
            result = self.client.check_order(order)
            self.stats.add(time.perf_counter() - started, result)
