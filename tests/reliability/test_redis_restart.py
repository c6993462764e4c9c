"""Redis (append-only, ``appendfsync everysec``) restarted while checks flow, the beat
ticks and the journal drains: workers, beat and clients reconnect by themselves, and no
audit record of a decision is lost.

The test runs its own redis-server (``Stack``), so the session's is untouched, and its
own pretrade, ops and monitor workers and beat. Reconnection is asserted within 30 s;
the times measured are printed (the target is 10 s).
"""

from __future__ import annotations

import time
from collections import Counter
from decimal import Decimal

import pytest

from risk_tasks.client import RiskClient
from risk_tasks.engine.model import SymbolSpec
from risk_tasks.engine.validation import validate_account
from tests.integration.helpers import wait_until
from tests.reliability.load import Load, latency_summary

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RECONNECT_LIMIT = 30.0  # asserted, s (the target, 10 s, is reported)
ACCOUNTS = [f"R{i}" for i in range(8)]


def arrange(stack) -> None:  # noqa: ANN001
    store = stack.rt.store
    store.put_symbols([SymbolSpec("BTC", Decimal("0.10"), Decimal("0.05"))])
    store.ingest_prices({"BTC": Decimal(100)}, time.time())
    for account_id in ACCOUNTS:
        store.upsert_account(validate_account({"account_id": account_id,
                                               "balance": "1000000000"}))


LIQUIDATABLE = [f"L{i}" for i in range(6)]


def breaching(stack) -> None:  # noqa: ANN001
    """400 of equity against 500 of maintenance: liquidatable at the next tick."""
    from risk_tasks.engine.model import Fill, Side

    items = [(validate_account({"account_id": a, "balance": "400"}),
              [Fill(f"lf-{a}", a, "BTC", Side.BUY, Decimal(100), Decimal(100))])
             for a in LIQUIDATABLE]
    stack.rt.store.create_accounts(items)


def liquidation_records(stack) -> dict[str, dict]:  # noqa: ANN001
    from sqlalchemy import select

    from models.tables import AlertRow, FillRow, LiquidationRow

    found = {}
    with stack.rt.sessions() as session:
        for account_id in LIQUIDATABLE:
            rows = list(session.scalars(select(LiquidationRow)
                                        .where(LiquidationRow.account_id == account_id)))
            fills = list(session.scalars(select(FillRow).where(
                FillRow.account_id == account_id, FillRow.source == "liquidation")))
            alerts = list(session.scalars(select(AlertRow)
                                          .where(AlertRow.account_id == account_id)))
            found[account_id] = {
                "episodes": len(rows), "status": [r.status for r in rows],
                "closing_fills": len(fills), "alerts": len(alerts),
                "position_left": stack.rt.redis.hget(f"risk:pos:{account_id}", "BTC")}
    return found


def last_tick(stack) -> float:  # noqa: ANN001
    try:
        raw = stack.rt.redis.hget("risk:monitor:last", "tick_ts")
    except Exception:  # noqa: BLE001 - Redis may be down
        return 0.0
    return float(raw) if raw else 0.0


def drained_since(stack, since: float) -> bool:  # noqa: ANN001
    """The beat's drain wrote an audit record made after ``since`` (so beat -> ops worker
    -> PostgreSQL works again)."""
    from sqlalchemy import func, select

    from models.tables import OrderCheckRow

    with stack.rt.sessions() as session:
        newest = session.scalar(select(func.max(OrderCheckRow.checked_at)))
    return newest is not None and newest.timestamp() > since


def test_redis_restart_under_load_loses_no_audit_record(stack_factory):
    # given: a whole engine on its own Redis, with checks flowing and the beat ticking
    stack = stack_factory(env_extra={"RISK_PRICE_STALE_SECONDS": "600"})
    arrange(stack)
    pretrade = stack.pretrade_worker()
    ops = stack.ops_worker()
    monitor = stack.monitor_worker(concurrency=1)
    beat = stack.beat()
    with RiskClient(app=stack.app, timeout=1.0) as client:
        load = Load(client, ACCOUNTS, prefix="r", threads=3).start()
        try:
            wait_until(lambda: load.count(lambda c: c.decided) >= 50, timeout=60,
                       message="decisions before the restart")
            wait_until(lambda: last_tick(stack) > 0, timeout=60, message="a tick before")
            before = latency_summary(load.calls)
            # and accounts that breach maintenance, so liquidations and alerts are under
            # way while Redis goes down
            breaching(stack)
            # when: Redis restarts (down about a second)
            stack.restart_redis(down_seconds=1.0)
            back = time.time()
            # then: each part works again by itself
            recovered = {}
            wait_until(lambda: load.since(back) and any(c.decided for c in load.since(back)),
                       timeout=RECONNECT_LIMIT, message="a decision after the restart")
            recovered["pretrade"] = min(c.at + c.took for c in load.since(back) if c.decided) - back
            wait_until(lambda: last_tick(stack) > back, timeout=RECONNECT_LIMIT,
                       message="a tick after the restart (beat and monitor worker)")
            recovered["beat+monitor"] = time.time() - back
            wait_until(lambda: drained_since(stack, back), timeout=RECONNECT_LIMIT,
                       message="a drain after the restart (beat and ops worker)")
            recovered["beat+ops drain"] = time.time() - back
            time.sleep(1)
        finally:
            calls = load.stop()
    after = latency_summary([c for c in calls if c.at > back])
    for worker in (pretrade, ops, monitor):  # remote control (what Flower and riskctl use)
        wait_until(lambda: stack.ping(worker, timeout=2), timeout=RECONNECT_LIMIT, interval=0,
                   message=f"{worker.name} answering a control ping")
    assert beat.running

    # then: every decision a caller received is in PostgreSQL, exactly once
    stack.drain()
    decided = {c.order_id for c in calls if c.decided}
    rows = Counter(stack.order_check_ids())
    assert max(rows.values()) == 1
    assert decided <= set(rows), sorted(decided - set(rows))[:10]
    # and the only other rows are decisions whose caller had given up waiting
    timed_out = {c.order_id for c in calls if c.client_side}
    assert set(rows) - decided <= timed_out
    # and every liquidation ran once and is on record, with its alert
    liquidations = liquidation_records(stack)
    print(f"\nredis restart: liquidations {liquidations}")
    for account_id in LIQUIDATABLE:
        record = liquidations[account_id]
        assert record["episodes"] == 1 and record["status"] == ["completed"], record
        assert record["closing_fills"] == 1 and not record["position_left"], record
        assert record["alerts"] >= 1, record
    print(f"\nredis restart: {len(calls)} calls, {len(decided)} decided, "
          f"{len(timed_out)} failed closed, {len(rows)} audit rows; recovered after "
          + ", ".join(f"{k} {v:.1f} s" for k, v in recovered.items())
          + f"; latency before {before}, after {after}")
    for part, seconds in recovered.items():
        assert seconds < RECONNECT_LIMIT, (part, seconds)
