"""Arrange steps and probes of the action tests (liquidation, unwind, alerts, dead letters).

Each test runs its own workers on a private broker (so nobody else takes its messages),
against the session's Redis and PostgreSQL, emptied by the ``rt`` fixture. Workers that
need the HTTP gateway get the loopback stub's URL in their environment. Short retry
back-off keeps the tests quick; everything else is as in production.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson
from sqlalchemy import select

from models import tables as t
from risk_tasks import actions
from risk_tasks.state import keys
from tests.integration.helpers import World, wait_until

ACTION_QUEUES = "liquidation,unwind,alerts,dead_letter"
FAST_RETRIES = {"RISK_RETRY_BACKOFF_BASE_SECONDS": "0.05",
                "RISK_RETRY_BACKOFF_MAX_SECONDS": "0.4",
                "RISK_LEASE_WAIT_SECONDS": "1"}


def http_env(stub: Any, **extra: str) -> dict[str, str]:
    return {"RISK_GATEWAY": "http", "RISK_GATEWAY_URL": stub.url,
            "RISK_GATEWAY_TIMEOUT_SECONDS": "3", **FAST_RETRIES, **extra}


class ActionWorld(World):
    """``World`` plus what the action tests send and read."""

    def __init__(self, rt: Any, broker: Any) -> None:
        super().__init__(rt, broker.app)
        self.broker = broker

    # -- ACT --

    def liquidate(self, account_id: Any, episode_id: Any, reason: Any = "test breach") -> Any:
        return self.app.send_task("risk.liquidate_account", args=[account_id, reason, episode_id])

    def unwind(self, account_id: Any, stop_id: Any) -> Any:
        return self.app.send_task("risk.unwind_account", args=[account_id, stop_id])

    # -- PROBE --

    def progress(self, key: str) -> dict | None:
        raw = self.rt.redis.get(key)
        return None if raw is None else orjson.loads(raw)

    def liquidation_progress(self, episode_id: str) -> dict | None:
        return self.progress(actions.liquidation_key(episode_id))

    def wait_liquidated(self, episode_id: str, timeout: float = 30.0) -> dict:
        return wait_until(lambda: (p := self.liquidation_progress(episode_id))
                          and p["status"] in actions.FINAL and p,
                          timeout=timeout, message=f"episode {episode_id} finished")

    def wait_unwound(self, stop_id: str, account_id: str, timeout: float = 30.0) -> dict:
        key = actions.unwind_key(stop_id, account_id)
        return wait_until(lambda: (p := self.progress(key)) and p["status"] in actions.FINAL
                          and p, timeout=timeout, message=f"unwind of {account_id} finished")

    def positions(self, account_id: str) -> dict[str, Decimal]:
        account, _ = self.rt.store.read_account(account_id)
        return {s: p.quantity for s, p in account.positions.items()}

    def balance(self, account_id: str) -> Decimal:
        account, _ = self.rt.store.read_account(account_id)
        return account.balance

    def drain(self) -> None:
        while sum(self.rt.drainer.drain(budget_seconds=5.0).values()):
            pass

    def query(self, model: Any, *where: Any) -> list[Any]:
        with self.rt.sessions() as session:
            stmt = select(model).where(*where).order_by(*model.__table__.primary_key)
            return list(session.scalars(stmt))

    def fills(self, account_id: str) -> list[Any]:
        return self.query(t.FillRow, t.FillRow.account_id == account_id)

    def journal_records(self, kind: str) -> list[dict]:
        records = [orjson.loads(f[b"d"]) for _, f in self.rt.redis.xrange(keys.JOURNAL_STREAM)]
        return [r for r in records if r.get("t") == kind]
