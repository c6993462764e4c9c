"""Arrange steps and probes of the monitor tests (tick, shards, aggregate, beat).

Every monitor test runs on a broker of its own (``PrivateBroker``: Redis DBs 3 and 4),
so that the only workers taking its messages are the ones it starts: a monitor worker
on ``monitor,shards`` and nothing on ``liquidation``, ``unwind`` or ``alerts``. What the
monitor enqueues for those queues stays in Redis, where ``BrokerQueues`` reads it
without consuming it. The hot state (Redis DB 2) and PostgreSQL are the session's,
emptied by the ``rt`` fixture.

Ticks are sent by the test with a ``tick_ts`` of its choice: never in the past (so no
tick is late unless a test wants one), at least a second after the previous one (so the
circuit breaker and the missed-second count see distinct ticks), and the test waits for
each tick's aggregate before it sends the next.
"""

from __future__ import annotations

import time
import zlib
from dataclasses import dataclass, field
from decimal import Decimal
from itertools import count
from typing import Any, Iterable, Sequence

import orjson

from risk_tasks.engine.model import Fill, Policy, Side, SymbolSpec
from risk_tasks.engine.policies import DEFAULT_POLICIES
from risk_tasks.engine.validation import validate_account
from tests.integration.helpers import wait_until
from tests.support.broker import BrokerQueues
from tests.support.workers import PrivateBroker, Worker

TASK_TIMEOUT = 30.0  # seconds a test waits for a tick's aggregate before failing
ACTION_QUEUES = ("liquidation", "unwind", "alerts")
AGGREGATE_KEYS = {"tick_ts", "accounts", "shards", "duration_ms", "lag_ms", "violations",
                  "liquidations_started", "failed_shards"}
# Workers of these tests: a generous tick deadline, so that a loaded machine never makes a
# tick "late" by accident (the late-tick test sends one that is a minute old).
MONITOR_ENV = {"RISK_MONITOR_DEADLINE_SECONDS": "5"}


def D(value: Any) -> Decimal:
    return Decimal(str(value))


def shard_of(account_id: str, shards: int = 4) -> int:
    """The shard of an account (the same stable hash as ``keys.shard_of``, recomputed)."""
    return zlib.crc32(account_id.encode()) % shards


def ids_in_shard(prefix: str, shard: int, n: int, shards: int = 4) -> list[str]:
    found: list[str] = []
    for i in count():
        account_id = f"{prefix}{i}"
        if shard_of(account_id, shards) == shard:
            found.append(account_id)
            if len(found) == n:
                return found
    raise AssertionError("unreachable")


def start_monitor_worker(broker: PrivateBroker, queues: str = "monitor,shards",
                         env: dict[str, str] | None = None, **kwargs: Any) -> Worker:
    """The monitor worker of DESIGN.md: prefork, two processes, on ``monitor,shards``."""
    return broker.start_worker(queues=queues, pool="prefork", concurrency=2,
                               env={**MONITOR_ENV, **(env or {})}, **kwargs)


@dataclass
class Tick:
    tick_ts: float
    result: dict[str, Any]  # what risk.monitor_tick returned
    aggregate: dict[str, Any] | None  # what its risk.aggregate_tick returned (None: skipped)

    @property
    def skipped(self) -> str | None:
        return self.result.get("skipped")


@dataclass
class MonitorWorld:
    rt: Any
    broker: PrivateBroker
    marks: dict[str, Decimal] = field(default_factory=dict)
    last_tick_ts: float = 0.0
    _ids: Iterable[int] = field(default_factory=count)

    def __post_init__(self) -> None:
        self.queues = BrokerQueues(self.broker.broker_url)
        self.queues.purge(*ACTION_QUEUES)

    @property
    def app(self):  # noqa: ANN201 - celery.Celery
        return self.broker.app

    # -- ARRANGE --

    def policies(self, policies: Sequence[Policy] = DEFAULT_POLICIES) -> None:
        self.rt.store.put_policies(list(policies))

    def symbol(self, symbol: str, imr: Any = "0.10", mmr: Any = "0.05") -> None:
        self.rt.store.put_symbols([SymbolSpec(symbol, D(imr), D(mmr))])

    def account(self, account_id: str, balance: Any, **fields: Any) -> None:
        parsed = validate_account({"account_id": account_id, "balance": str(balance),
                                   **{k: str(v) for k, v in fields.items()}})
        self.rt.store.upsert_account(parsed)

    def position(self, account_id: str, symbol: str, quantity: Any, price: Any) -> None:
        """A fill that opens (or moves) a position: quantity > 0 buys, < 0 sells."""
        q = D(quantity)
        self.rt.store.apply_fill(Fill(f"fill-{next(self._ids)}", account_id, symbol,
                                      Side.BUY if q > 0 else Side.SELL, abs(q), D(price)))

    def populate(self, accounts: Iterable[tuple[str, Any, dict, list[tuple[str, Any, Any]]]]
                 ) -> int:
        """Many accounts at once, each ``(id, balance, fields, [(symbol, qty, price)])``,
        through the bulk path of the state store (the same commit script as one by one)."""
        items = []
        for account_id, balance, fields, positions in accounts:
            parsed = validate_account({"account_id": account_id, "balance": str(balance),
                                       **{k: str(v) for k, v in fields.items()}})
            fills = [Fill(f"fill-{next(self._ids)}", account_id, symbol,
                          Side.BUY if D(q) > 0 else Side.SELL, abs(D(q)), D(price))
                     for symbol, q, price in positions]
            items.append((parsed, fills))
        return self.rt.store.create_accounts(items)["created"]

    def prices(self, ts: float | None = None, **marks: Any) -> None:
        """New marks (kept, so that ``feed`` can send them again as a live feed would)."""
        self.marks.update({s: D(p) for s, p in marks.items()})
        self.feed(ts)

    def feed(self, ts: float | None = None) -> None:
        if self.marks:
            self.rt.store.ingest_prices(self.marks, time.time() if ts is None else ts)

    # -- ACT --

    def next_tick_ts(self) -> float:
        return max(time.time(), self.last_tick_ts + 1.0)

    def send_tick(self, tick_ts: float | None = None):  # noqa: ANN201 - AsyncResult
        tick_ts = self.next_tick_ts() if tick_ts is None else tick_ts
        self.last_tick_ts = max(self.last_tick_ts, tick_ts)
        return self.app.send_task("risk.monitor_tick", [tick_ts])

    def aggregate_of(self, result: dict[str, Any], timeout: float = TASK_TIMEOUT
                     ) -> dict[str, Any] | None:
        if result.get("callback_id") is None:
            return None
        return self.app.AsyncResult(result["callback_id"]).get(timeout=timeout)

    def tick(self, tick_ts: float | None = None, feed: bool = True) -> Tick:
        """One tick, run to its aggregate; the price feed is refreshed first (``feed``)."""
        if feed:
            self.feed()
        tick_ts = self.next_tick_ts() if tick_ts is None else tick_ts
        result = self.send_tick(tick_ts).get(timeout=TASK_TIMEOUT)
        return Tick(tick_ts, result, self.aggregate_of(result))

    def run_task(self, name: str, *args: Any, timeout: float = TASK_TIMEOUT) -> Any:
        return self.app.send_task(name, list(args)).get(timeout=timeout)

    # -- PROBE --

    def messages(self, queue: str, task: str | None = None) -> list:
        return self.queues.messages(queue, task)

    def alerts(self) -> list[dict[str, Any]]:
        """Alerts the monitor enqueued for ``risk.send_alert``, oldest first."""
        return [m.args[0] for m in self.messages("alerts", "risk.send_alert")]

    def liquidations(self) -> list[list[Any]]:
        return [m.args for m in self.messages("liquidation", "risk.liquidate_account")]

    def unwinds(self) -> list[list[Any]]:
        return [m.args for m in self.messages("unwind", "risk.unwind_account")]

    def status(self, account_id: str) -> str:
        account, _ = self.rt.store.read_account(account_id)
        return account.status.value

    def counters(self) -> dict[str, int]:
        raw = self.rt.redis.hgetall("risk:monitor:counters")
        return {k.decode(): int(v) for k, v in raw.items()}

    def drain(self) -> None:
        """Write every journal record to PostgreSQL."""
        drainer = self.rt.drainer

        def drained() -> bool:
            drainer.drain(budget_seconds=5.0)
            return not any(drainer.backlog().values())

        wait_until(drained, timeout=60, message="journal drained")

    def rows(self, model: Any, **where: Any) -> list[Any]:
        from sqlalchemy import select

        stmt = select(model)
        for name, value in where.items():
            stmt = stmt.where(getattr(model, name) == value)
        with self.rt.sessions() as session:
            return list(session.scalars(stmt))

    def results(self) -> list[dict[str, Any]]:
        """Every task result stored in this broker's result backend (kept 60 s)."""
        import redis

        client = redis.Redis.from_url(self.broker.backend_url)
        try:
            found = []
            for key in client.scan_iter(match="celery-task-meta-*"):
                raw = client.get(key)
                if raw:
                    meta = orjson.loads(raw)
                    if meta.get("status") == "SUCCESS":
                        found.append(meta["result"])
            return found
        finally:
            client.close()

    def shard_results(self, tick_ts: float) -> list[dict[str, Any]]:
        """The stored ``evaluate_shard`` results of one tick."""
        return [r for r in self.results() if isinstance(r, dict) and "shard" in r
                and r.get("tick_ts") == tick_ts and "priced" in r]

    def snapshot(self) -> dict[bytes, bytes]:
        """Every key of the hot state with its serialised value (to prove nothing moved)."""
        r = self.rt.redis
        return {k: r.dump(k) for k in sorted(r.scan_iter(count=1000))}

    def episode(self, account_id: str) -> str | None:
        raw = self.rt.redis.get(f"risk:liq:episode:{account_id}")
        return raw.decode() if raw else None

    def close(self) -> None:
        self.queues.close()
