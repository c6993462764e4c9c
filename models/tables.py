"""Tables of the system of record (PostgreSQL; SQLite for a first look on a laptop).

Money, prices and quantities are ``NUMERIC`` with no fixed scale, so a value is stored
exactly as the engine computed it. Rows reach these tables through the Redis journal
(``risk_tasks/journal.py``), drained in batches, so none of them is written on the
pre-trade path.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON, BigInteger, Boolean, DateTime, Index, Integer, Numeric, String, Text,
    TypeDecorator, UniqueConstraint, func,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class DecimalString(TypeDecorator):
    """Exact decimals on SQLite, which has no NUMERIC of its own (it would use floats)."""

    impl = String(64)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> str | None:
        return None if value is None else str(Decimal(value))

    def process_result_value(self, value: Any, dialect: Any) -> Decimal | None:
        return None if value is None else Decimal(value)


Money = Numeric().with_variant(DecimalString(), "sqlite")
Document = JSON().with_variant(JSONB(), "postgresql")
Timestamp = DateTime(timezone=True)
BigId = BigInteger().with_variant(Integer(), "sqlite")  # SQLite autoincrements INTEGER only


class Base(DeclarativeBase):
    pass


# -- REFERENCE DATA --

class SymbolRow(Base):
    __tablename__ = "symbols"

    symbol: Mapped[str] = mapped_column(String(32), primary_key=True)
    imr: Mapped[Decimal] = mapped_column(Money)
    mmr: Mapped[Decimal] = mapped_column(Money)
    price_collar: Mapped[Decimal | None] = mapped_column(Money)
    max_order_notional: Mapped[Decimal | None] = mapped_column(Money)
    updated_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.current_timestamp())


class PolicyRow(Base):
    __tablename__ = "risk_policies"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    type: Mapped[str] = mapped_column(String(16))
    metric: Mapped[str] = mapped_column(String(64))
    operator: Mapped[str] = mapped_column(String(32))
    threshold: Mapped[Decimal] = mapped_column(Money)
    scope: Mapped[str] = mapped_column(String(16), default="account")
    scope_id: Mapped[str | None] = mapped_column(String(128))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.current_timestamp())
    updated_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.current_timestamp())


# -- ACCOUNTS --

class AccountRow(Base):
    __tablename__ = "accounts"

    account_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    balance: Mapped[Decimal] = mapped_column(Money)
    status: Mapped[str] = mapped_column(String(16), default="ACTIVE")
    peak_equity: Mapped[Decimal] = mapped_column(Money)
    daily_start_equity: Mapped[Decimal] = mapped_column(Money)
    max_leverage: Mapped[Decimal | None] = mapped_column(Money)
    version: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime] = mapped_column(Timestamp)


class PositionRow(Base):
    __tablename__ = "positions"

    account_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    symbol: Mapped[str] = mapped_column(String(32), primary_key=True)
    quantity: Mapped[Decimal] = mapped_column(Money)
    entry_price: Mapped[Decimal] = mapped_column(Money)
    updated_at: Mapped[datetime] = mapped_column(Timestamp)


class FillRow(Base):
    __tablename__ = "fills"

    fill_id: Mapped[str] = mapped_column(String(160), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(128), index=True)
    symbol: Mapped[str] = mapped_column(String(32))
    side: Mapped[str] = mapped_column(String(4))
    quantity: Mapped[Decimal] = mapped_column(Money)
    price: Mapped[Decimal] = mapped_column(Money)
    realized_pnl: Mapped[Decimal] = mapped_column(Money)
    source: Mapped[str] = mapped_column(String(16))  # ingest | liquidation | unwind
    reference: Mapped[str | None] = mapped_column(String(160))  # episode or stop id
    filled_at: Mapped[datetime] = mapped_column(Timestamp, index=True)


# -- TRADING STATE AND STOPS --

class TradingStateChangeRow(Base):
    __tablename__ = "trading_state_changes"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    scope: Mapped[str] = mapped_column(String(16))  # global | account
    account_id: Mapped[str | None] = mapped_column(String(128), index=True)
    old_state: Mapped[str | None] = mapped_column(String(16))
    new_state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text)
    changed_by: Mapped[str] = mapped_column(String(128))
    stop_id: Mapped[str | None] = mapped_column(String(64))
    changed_at: Mapped[datetime] = mapped_column(Timestamp, index=True)


class EmergencyStopRow(Base):
    __tablename__ = "emergency_stops"

    stop_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    scope: Mapped[str] = mapped_column(String(16))
    account_id: Mapped[str | None] = mapped_column(String(128), index=True)
    reason: Mapped[str] = mapped_column(Text)
    triggered_by: Mapped[str] = mapped_column(String(128))
    triggered_at: Mapped[datetime] = mapped_column(Timestamp, index=True)
    status: Mapped[str] = mapped_column(String(16), default="active")  # active | resolved
    resolved_by: Mapped[str | None] = mapped_column(String(128))
    resolved_at: Mapped[datetime | None] = mapped_column(Timestamp)
    resolve_reason: Mapped[str | None] = mapped_column(Text)
    accounts_to_unwind: Mapped[int] = mapped_column(Integer, default=0)
    orders_canceled: Mapped[int] = mapped_column(Integer, default=0)
    positions_closed: Mapped[int] = mapped_column(Integer, default=0)
    completed: Mapped[bool] = mapped_column(Boolean, default=False)
    completed_at: Mapped[datetime | None] = mapped_column(Timestamp)
    snapshot: Mapped[dict | None] = mapped_column(Document)


class OperatorActionRow(Base):
    __tablename__ = "operator_actions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    action: Mapped[str] = mapped_column(String(64))
    operator: Mapped[str] = mapped_column(String(128))
    allowed: Mapped[bool] = mapped_column(Boolean)
    reason: Mapped[str | None] = mapped_column(Text)
    details: Mapped[dict | None] = mapped_column(Document)
    acted_at: Mapped[datetime] = mapped_column(Timestamp, index=True)


# -- DECISIONS AND FINDINGS --

class OrderCheckRow(Base):
    """One pre-trade decision: the request, the result, the reasons and the latency."""

    __tablename__ = "order_checks"
    __table_args__ = (Index("ix_order_checks_account_time", "account_id", "checked_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    journal_id: Mapped[str] = mapped_column(String(32), unique=True)  # Redis stream id
    order_id: Mapped[str | None] = mapped_column(String(128))
    account_id: Mapped[str | None] = mapped_column(String(128))
    symbol: Mapped[str | None] = mapped_column(String(32))
    side: Mapped[str | None] = mapped_column(String(4))
    order_type: Mapped[str | None] = mapped_column(String(8))
    quantity: Mapped[Decimal | None] = mapped_column(Money)
    price: Mapped[Decimal | None] = mapped_column(Money)
    approved: Mapped[bool] = mapped_column(Boolean)
    rejection_reason: Mapped[str | None] = mapped_column(String(32), index=True)
    message: Mapped[str | None] = mapped_column(Text)
    violations: Mapped[list | None] = mapped_column(Document)
    post_trade_metrics: Mapped[dict | None] = mapped_column(Document)
    request: Mapped[Any] = mapped_column(Document)
    processing_time_us: Mapped[int] = mapped_column(Integer)
    worker: Mapped[str | None] = mapped_column(String(128))
    checked_at: Mapped[datetime] = mapped_column(Timestamp, index=True)


class ViolationRow(Base):
    __tablename__ = "risk_violations"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(String(128), index=True)
    policy_name: Mapped[str] = mapped_column(String(255), index=True)
    policy_type: Mapped[str] = mapped_column(String(16))
    metric: Mapped[str] = mapped_column(String(64))
    value: Mapped[Decimal | None] = mapped_column(Money)
    operator: Mapped[str] = mapped_column(String(32))
    threshold: Mapped[Decimal] = mapped_column(Money)
    source: Mapped[str] = mapped_column(String(16))  # monitor | pretrade
    tick_ts: Mapped[Decimal | None] = mapped_column(Money)
    detected_at: Mapped[datetime] = mapped_column(Timestamp, index=True)


class LiquidationRow(Base):
    __tablename__ = "liquidations"

    episode_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(128), index=True)
    reason: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))  # started | completed | failed
    equity_before: Mapped[Decimal | None] = mapped_column(Money)
    maintenance_before: Mapped[Decimal | None] = mapped_column(Money)
    equity_after: Mapped[Decimal | None] = mapped_column(Money)
    realized_pnl: Mapped[Decimal | None] = mapped_column(Money)
    positions_closed: Mapped[list | None] = mapped_column(Document)
    orders_canceled: Mapped[int] = mapped_column(Integer, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(Timestamp, index=True)
    completed_at: Mapped[datetime | None] = mapped_column(Timestamp)


class LiquidationStepRow(Base):
    __tablename__ = "liquidation_steps"
    __table_args__ = (UniqueConstraint("episode_id", "step"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    episode_id: Mapped[str] = mapped_column(String(128), index=True)
    step: Mapped[int] = mapped_column(Integer)
    action: Mapped[str] = mapped_column(String(32))  # cancel_orders | close_position
    symbol: Mapped[str | None] = mapped_column(String(32))
    quantity: Mapped[Decimal | None] = mapped_column(Money)
    price: Mapped[Decimal | None] = mapped_column(Money)
    realized_pnl: Mapped[Decimal | None] = mapped_column(Money)
    at: Mapped[datetime] = mapped_column(Timestamp)


class AlertRow(Base):
    __tablename__ = "alerts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    alert_id: Mapped[str] = mapped_column(String(64), unique=True)
    level: Mapped[str] = mapped_column(String(16), index=True)  # warning | critical | emergency
    kind: Mapped[str] = mapped_column(String(64))
    policy: Mapped[str | None] = mapped_column(String(255))
    account_id: Mapped[str | None] = mapped_column(String(128), index=True)
    message: Mapped[str] = mapped_column(Text)
    payload: Mapped[dict | None] = mapped_column(Document)
    delivered_to: Mapped[list | None] = mapped_column(Document)
    deduplicated: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(Timestamp, index=True)


class DeadLetterRow(Base):
    __tablename__ = "dead_letters"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    dead_letter_id: Mapped[str] = mapped_column(String(64), unique=True)
    task_id: Mapped[str | None] = mapped_column(String(64))
    task_name: Mapped[str] = mapped_column(String(128), index=True)
    args: Mapped[list | None] = mapped_column(Document)
    kwargs: Mapped[dict | None] = mapped_column(Document)
    idempotency_key: Mapped[str | None] = mapped_column(String(160))
    error: Mapped[str] = mapped_column(Text)
    traceback: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(16), default="dead")  # dead | replayed | purged
    created_at: Mapped[datetime] = mapped_column(Timestamp, index=True)
    replayed_at: Mapped[datetime | None] = mapped_column(Timestamp)
    replayed_by: Mapped[str | None] = mapped_column(String(128))
    replay_task_id: Mapped[str | None] = mapped_column(String(64))


class ComplianceReportRow(Base):
    __tablename__ = "compliance_reports"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    period: Mapped[str] = mapped_column(String(16))  # hourly | daily | adhoc
    period_start: Mapped[datetime] = mapped_column(Timestamp)
    period_end: Mapped[datetime] = mapped_column(Timestamp)
    summary: Mapped[dict] = mapped_column(Document)
    html: Mapped[str] = mapped_column(Text)
    csv: Mapped[str] = mapped_column(Text)
    paths: Mapped[dict | None] = mapped_column(Document)
    created_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.current_timestamp())
    __table_args__ = (UniqueConstraint("period", "period_start", "period_end"),)


class JournalCursorRow(Base):
    """How far each Redis journal stream has been written here (exactly-once drain)."""

    __tablename__ = "journal_cursors"

    stream: Mapped[str] = mapped_column(String(64), primary_key=True)
    last_id: Mapped[str] = mapped_column(String(32))
    records: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime | None] = mapped_column(Timestamp)
