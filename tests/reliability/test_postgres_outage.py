"""PostgreSQL stopped while checks flow: pre-trade decisions go on (PostgreSQL is not on
the hot path), the audit backlog in Redis grows, and once the database is back the
beat's ``risk.drain_journal`` writes all of it: one row per decision, none twice.

The test stops a PostgreSQL of its own (``Stack(private_postgres=True)``) for
``RISK_TEST_PG_OUTAGE_SECONDS`` (12 s here; tests/soak/run_soak.py runs 60 s). Latency
before, during and after is printed, not asserted.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from decimal import Decimal

import pytest

from risk_tasks.client import RiskClient
from risk_tasks.engine.model import SymbolSpec
from risk_tasks.engine.validation import validate_account
from risk_tasks.journal import STREAMS
from tests.integration.helpers import wait_until
from tests.reliability.load import Load, latency_summary

pytestmark = [pytest.mark.integration, pytest.mark.slow]

OUTAGE = float(os.environ.get("RISK_TEST_PG_OUTAGE_SECONDS", "12"))
ACCOUNTS = [f"P{i}" for i in range(8)]


def audit_backlog(stack) -> int:  # noqa: ANN001
    return sum(stack.backlog().values())


def newest_ids(stack) -> dict[str, bytes]:  # noqa: ANN001
    """The id of the newest record of each journal stream (empty streams left out)."""
    newest = {}
    for stream in STREAMS:
        entries = stack.rt.redis.xrevrange(stream, count=1)
        if entries:
            newest[stream] = entries[0][0]
    return newest


def written_up_to(stack, marks: dict[str, bytes]) -> bool:  # noqa: ANN001
    """Every record up to ``marks`` has left Redis, which the drainer does only after
    committing it to PostgreSQL (checks keep adding newer records meanwhile, so the
    stream's length alone says nothing)."""
    for stream, mark in marks.items():
        oldest = stack.rt.redis.xrange(stream, count=1)
        if oldest and stream_id(oldest[0][0]) <= stream_id(mark):
            return False
    return True


def stream_id(raw: bytes) -> tuple[int, int]:
    ms, seq = raw.decode().split("-")
    return int(ms), int(seq)


def test_postgres_outage_keeps_checks_answering_and_the_backlog_drains_completely(
        stack_factory):
    # given: an engine on its own PostgreSQL, checks flowing, the beat draining
    stack = stack_factory(private_postgres=True, env_extra={"RISK_PRICE_STALE_SECONDS": "600"})
    store = stack.rt.store
    store.put_symbols([SymbolSpec("BTC", Decimal("0.10"), Decimal("0.05"))])
    store.ingest_prices({"BTC": Decimal(100)}, time.time())
    for account_id in ACCOUNTS:
        store.upsert_account(validate_account({"account_id": account_id,
                                               "balance": "1000000000"}))
    stack.pretrade_worker()
    ops = stack.ops_worker()
    beat = stack.beat()
    with RiskClient(app=stack.app, timeout=1.0) as client:
        load = Load(client, ACCOUNTS, prefix="pg", threads=3).start()
        try:
            wait_until(lambda: load.count(lambda c: c.decided) >= 50, timeout=60,
                       message="decisions before the outage")
            before = newest_ids(stack)
            wait_until(lambda: written_up_to(stack, before), timeout=60, interval=0.2,
                       message="the beat's drain keeping up before the outage")
            started = time.time()
            # when: PostgreSQL stops
            stack.stop_postgres()
            stopped = time.time()
            at_stop = audit_backlog(stack)
            samples = []
            while time.time() < stopped + OUTAGE:
                time.sleep(1)
                samples.append(audit_backlog(stack))
            # and comes back
            stack.start_postgres()
            back = time.time()
            waiting = newest_ids(stack)
            # then: the beat's drain catches up by itself, while checks go on
            wait_until(lambda: written_up_to(stack, waiting), timeout=120, interval=0.2,
                       message="the drain caught up after the outage")
            drained = time.time()
        finally:
            calls = load.stop()
    # and empties it once checks stop
    wait_until(lambda: audit_backlog(stack) == 0, timeout=60, interval=0.5,
               message="the backlog drained by the beat")
    assert beat.running and stack.ping(ops, timeout=5)

    # then: checks were decided all through the outage
    during = [c for c in calls if stopped < c.at < back]
    assert sum(c.decided for c in during) >= OUTAGE * 5, len(during)
    assert all(c.decided for c in during), [c for c in during if not c.decided][:5]
    # and the backlog grew while the database was away
    assert max(samples) > at_stop + 50, samples
    # and every decision is in PostgreSQL, once
    stack.drain()
    decided = {c.order_id for c in calls if c.decided}
    rows = Counter(stack.order_check_ids())
    assert max(rows.values()) == 1
    assert decided <= set(rows), sorted(decided - set(rows))[:10]
    assert set(rows) - decided <= {c.order_id for c in calls if c.client_side}
    print(f"\npostgres outage {OUTAGE:.0f} s: {len(calls)} calls, {len(decided)} decided "
          f"({sum(c.decided for c in during)} during the outage), {len(rows)} audit rows; "
          f"backlog {at_stop} -> peak {max(samples)}, drained {drained - back:.1f} s after "
          f"the database was back; latency before "
          f"{latency_summary([c for c in calls if started - 10 < c.at < stopped])}, during "
          f"{latency_summary(during)}, after {latency_summary([c for c in calls if c.at > back])}")
