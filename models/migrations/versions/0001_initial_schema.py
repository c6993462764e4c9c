"""Initial schema: every table of the system of record, and the five default policies.

Revision ID: 0001
Revises: 
Create Date: 2026-11-23 09:27:37.779543
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

import models.tables

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('accounts',
    sa.Column('account_id', sa.String(length=128), nullable=False),
    sa.Column('balance', sa.Numeric().with_variant(models.tables.DecimalString(length=64), 'sqlite'), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('peak_equity', sa.Numeric().with_variant(models.tables.DecimalString(length=64), 'sqlite'), nullable=False),
    sa.Column('daily_start_equity', sa.Numeric().with_variant(models.tables.DecimalString(length=64), 'sqlite'), nullable=False),
    sa.Column('max_leverage', sa.Numeric().with_variant(models.tables.DecimalString(length=64), 'sqlite'), nullable=True),
    sa.Column('version', sa.BigInteger(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('account_id')
    )
    op.create_table('alerts',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('alert_id', sa.String(length=64), nullable=False),
    sa.Column('level', sa.String(length=16), nullable=False),
    sa.Column('kind', sa.String(length=64), nullable=False),
    sa.Column('policy', sa.String(length=255), nullable=True),
    sa.Column('account_id', sa.String(length=128), nullable=True),
    sa.Column('message', sa.Text(), nullable=False),
    sa.Column('payload', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('delivered_to', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('deduplicated', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('alert_id')
    )
    op.create_index(op.f('ix_alerts_account_id'), 'alerts', ['account_id'], unique=False)
    op.create_index(op.f('ix_alerts_created_at'), 'alerts', ['created_at'], unique=False)
    op.create_index(op.f('ix_alerts_level'), 'alerts', ['level'], unique=False)
    op.create_table('compliance_reports',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('period', sa.String(length=16), nullable=False),
    sa.Column('period_start', sa.DateTime(timezone=True), nullable=False),
    sa.Column('period_end', sa.DateTime(timezone=True), nullable=False),
    sa.Column('summary', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('html', sa.Text(), nullable=False),
    sa.Column('csv', sa.Text(), nullable=False),
    sa.Column('paths', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('CURRENT_TIMESTAMP'), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('period', 'period_start', 'period_end')
    )
    op.create_table('dead_letters',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('dead_letter_id', sa.String(length=64), nullable=False),
    sa.Column('task_id', sa.String(length=64), nullable=True),
    sa.Column('task_name', sa.String(length=128), nullable=False),
    sa.Column('args', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('kwargs', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('idempotency_key', sa.String(length=160), nullable=True),
    sa.Column('error', sa.Text(), nullable=False),
    sa.Column('traceback', sa.Text(), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('replayed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('replayed_by', sa.String(length=128), nullable=True),
    sa.Column('replay_task_id', sa.String(length=64), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('dead_letter_id')
    )
    op.create_index(op.f('ix_dead_letters_created_at'), 'dead_letters', ['created_at'], unique=False)
    op.create_index(op.f('ix_dead_letters_task_name'), 'dead_letters', ['task_name'], unique=False)
    op.create_table('emergency_stops',
    sa.Column('stop_id', sa.String(length=64), nullable=False),
    sa.Column('scope', sa.String(length=16), nullable=False),
    sa.Column('account_id', sa.String(length=128), nullable=True),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('triggered_by', sa.String(length=128), nullable=False),
    sa.Column('triggered_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('resolved_by', sa.String(length=128), nullable=True),
    sa.Column('resolved_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('resolve_reason', sa.Text(), nullable=True),
    sa.Column('accounts_to_unwind', sa.Integer(), nullable=False),
    sa.Column('orders_canceled', sa.Integer(), nullable=False),
    sa.Column('positions_closed', sa.Integer(), nullable=False),
    sa.Column('completed', sa.Boolean(), nullable=False),
    sa.Column('completed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('snapshot', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.PrimaryKeyConstraint('stop_id')
    )
    op.create_index(op.f('ix_emergency_stops_account_id'), 'emergency_stops', ['account_id'], unique=False)
    op.create_index(op.f('ix_emergency_stops_triggered_at'), 'emergency_stops', ['triggered_at'], unique=False)
    op.create_table('fills',
    sa.Column('fill_id', sa.String(length=160), nullable=False),
    sa.Column('account_id', sa.String(length=128), nullable=False),
    sa.Column('symbol', sa.String(length=32), nullable=False),
    sa.Column('side', sa.String(length=4), nullable=False),
    sa.Column('quantity', sa.Numeric().with_variant(models.tables.DecimalString(length=64), 'sqlite'), nullable=False),
    sa.Column('price', sa.Numeric().with_variant(models.tables.DecimalString(length=64), 'sqlite'), nullable=False),
    sa.Column('realized_pnl', sa.Numeric().with_variant(models.tables.DecimalString(length=64), 'sqlite'), nullable=False),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.Column('reference', sa.String(length=160), nullable=True),
    sa.Column('filled_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('fill_id')
    )
    op.create_index(op.f('ix_fills_account_id'), 'fills', ['account_id'], unique=False)
    op.create_index(op.f('ix_fills_filled_at'), 'fills', ['filled_at'], unique=False)
    op.create_table('journal_cursors',
    sa.Column('stream', sa.String(length=64), nullable=False),
    sa.Column('last_id', sa.String(length=32), nullable=False),
    sa.Column('records', sa.BigInteger(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('stream')
    )
    op.create_table('liquidation_steps',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('episode_id', sa.String(length=128), nullable=False),
    sa.Column('step', sa.Integer(), nullable=False),
    sa.Column('action', sa.String(length=32), nullable=False),
    sa.Column('symbol', sa.String(length=32), nullable=True),
    sa.Column('quantity', sa.Numeric().with_variant(models.tables.DecimalString(length=64), 'sqlite'), nullable=True),
    sa.Column('price', sa.Numeric().with_variant(models.tables.DecimalString(length=64), 'sqlite'), nullable=True),
    sa.Column('realized_pnl', sa.Numeric().with_variant(models.tables.DecimalString(length=64), 'sqlite'), nullable=True),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('episode_id', 'step')
    )
    op.create_index(op.f('ix_liquidation_steps_episode_id'), 'liquidation_steps', ['episode_id'], unique=False)
    op.create_table('liquidations',
    sa.Column('episode_id', sa.String(length=128), nullable=False),
    sa.Column('account_id', sa.String(length=128), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('equity_before', sa.Numeric().with_variant(models.tables.DecimalString(length=64), 'sqlite'), nullable=True),
    sa.Column('maintenance_before', sa.Numeric().with_variant(models.tables.DecimalString(length=64), 'sqlite'), nullable=True),
    sa.Column('equity_after', sa.Numeric().with_variant(models.tables.DecimalString(length=64), 'sqlite'), nullable=True),
    sa.Column('realized_pnl', sa.Numeric().with_variant(models.tables.DecimalString(length=64), 'sqlite'), nullable=True),
    sa.Column('positions_closed', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('orders_canceled', sa.Integer(), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('completed_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('episode_id')
    )
    op.create_index(op.f('ix_liquidations_account_id'), 'liquidations', ['account_id'], unique=False)
    op.create_index(op.f('ix_liquidations_started_at'), 'liquidations', ['started_at'], unique=False)
    op.create_table('operator_actions',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('action', sa.String(length=64), nullable=False),
    sa.Column('operator', sa.String(length=128), nullable=False),
    sa.Column('allowed', sa.Boolean(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('details', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('acted_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_operator_actions_acted_at'), 'operator_actions', ['acted_at'], unique=False)
    op.create_table('order_checks',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('journal_id', sa.String(length=32), nullable=False),
    sa.Column('order_id', sa.String(length=128), nullable=True),
    sa.Column('account_id', sa.String(length=128), nullable=True),
    sa.Column('symbol', sa.String(length=32), nullable=True),
    sa.Column('side', sa.String(length=4), nullable=True),
    sa.Column('order_type', sa.String(length=8), nullable=True),
    sa.Column('quantity', sa.Numeric().with_variant(models.tables.DecimalString(length=64), 'sqlite'), nullable=True),
    sa.Column('price', sa.Numeric().with_variant(models.tables.DecimalString(length=64), 'sqlite'), nullable=True),
    sa.Column('approved', sa.Boolean(), nullable=False),
    sa.Column('rejection_reason', sa.String(length=32), nullable=True),
    sa.Column('message', sa.Text(), nullable=True),
    sa.Column('violations', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('post_trade_metrics', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('request', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('processing_time_us', sa.Integer(), nullable=False),
    sa.Column('worker', sa.String(length=128), nullable=True),
    sa.Column('checked_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('journal_id')
    )
    op.create_index('ix_order_checks_account_time', 'order_checks', ['account_id', 'checked_at'], unique=False)
    op.create_index(op.f('ix_order_checks_checked_at'), 'order_checks', ['checked_at'], unique=False)
    op.create_index(op.f('ix_order_checks_rejection_reason'), 'order_checks', ['rejection_reason'], unique=False)
    op.create_table('positions',
    sa.Column('account_id', sa.String(length=128), nullable=False),
    sa.Column('symbol', sa.String(length=32), nullable=False),
    sa.Column('quantity', sa.Numeric().with_variant(models.tables.DecimalString(length=64), 'sqlite'), nullable=False),
    sa.Column('entry_price', sa.Numeric().with_variant(models.tables.DecimalString(length=64), 'sqlite'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('account_id', 'symbol')
    )
    op.create_table('risk_policies',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('type', sa.String(length=16), nullable=False),
    sa.Column('metric', sa.String(length=64), nullable=False),
    sa.Column('operator', sa.String(length=32), nullable=False),
    sa.Column('threshold', sa.Numeric().with_variant(models.tables.DecimalString(length=64), 'sqlite'), nullable=False),
    sa.Column('scope', sa.String(length=16), nullable=False),
    sa.Column('scope_id', sa.String(length=128), nullable=True),
    sa.Column('enabled', sa.Boolean(), nullable=False),
    sa.Column('priority', sa.Integer(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('CURRENT_TIMESTAMP'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('CURRENT_TIMESTAMP'), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name')
    )
    op.create_table('risk_violations',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('account_id', sa.String(length=128), nullable=False),
    sa.Column('policy_name', sa.String(length=255), nullable=False),
    sa.Column('policy_type', sa.String(length=16), nullable=False),
    sa.Column('metric', sa.String(length=64), nullable=False),
    sa.Column('value', sa.Numeric().with_variant(models.tables.DecimalString(length=64), 'sqlite'), nullable=True),
    sa.Column('operator', sa.String(length=32), nullable=False),
    sa.Column('threshold', sa.Numeric().with_variant(models.tables.DecimalString(length=64), 'sqlite'), nullable=False),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.Column('tick_ts', sa.Numeric().with_variant(models.tables.DecimalString(length=64), 'sqlite'), nullable=True),
    sa.Column('detected_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_risk_violations_account_id'), 'risk_violations', ['account_id'], unique=False)
    op.create_index(op.f('ix_risk_violations_detected_at'), 'risk_violations', ['detected_at'], unique=False)
    op.create_index(op.f('ix_risk_violations_policy_name'), 'risk_violations', ['policy_name'], unique=False)
    op.create_table('symbols',
    sa.Column('symbol', sa.String(length=32), nullable=False),
    sa.Column('imr', sa.Numeric().with_variant(models.tables.DecimalString(length=64), 'sqlite'), nullable=False),
    sa.Column('mmr', sa.Numeric().with_variant(models.tables.DecimalString(length=64), 'sqlite'), nullable=False),
    sa.Column('price_collar', sa.Numeric().with_variant(models.tables.DecimalString(length=64), 'sqlite'), nullable=True),
    sa.Column('max_order_notional', sa.Numeric().with_variant(models.tables.DecimalString(length=64), 'sqlite'), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('CURRENT_TIMESTAMP'), nullable=False),
    sa.PrimaryKeyConstraint('symbol')
    )
    op.create_table('trading_state_changes',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('scope', sa.String(length=16), nullable=False),
    sa.Column('account_id', sa.String(length=128), nullable=True),
    sa.Column('old_state', sa.String(length=16), nullable=True),
    sa.Column('new_state', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('changed_by', sa.String(length=128), nullable=False),
    sa.Column('stop_id', sa.String(length=64), nullable=True),
    sa.Column('changed_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index(op.f('ix_trading_state_changes_account_id'), 'trading_state_changes', ['account_id'], unique=False)
    op.create_index(op.f('ix_trading_state_changes_changed_at'), 'trading_state_changes', ['changed_at'], unique=False)
    policies = sa.table(
        "risk_policies",
        sa.column("name", sa.String), sa.column("type", sa.String),
        sa.column("metric", sa.String), sa.column("operator", sa.String),
        sa.column("threshold", sa.Numeric), sa.column("scope", sa.String),
        sa.column("enabled", sa.Boolean), sa.column("priority", sa.Integer),
        sa.column("version", sa.Integer),
    )
    op.bulk_insert(policies, [
        {"name": name, "type": ptype, "metric": metric, "operator": operator,
         "threshold": threshold, "scope": "account", "enabled": True,
         "priority": priority, "version": 1}
        for name, ptype, metric, operator, threshold, priority in DEFAULT_POLICIES
    ])


# The defaults of DESIGN.md, frozen here as they were when this migration was written.
DEFAULT_POLICIES = [
    ("Max Account Leverage", "hard", "leverage", "less_than_or_equal", "10", 100),
    ("Min Margin Ratio", "hard", "margin_ratio", "greater_than_or_equal", "1.0", 90),
    ("Daily Drawdown Warning", "soft", "drawdown_daily", "less_than_or_equal", "0.10", 50),
    ("Max Drawdown Hard Limit", "hard", "drawdown_max", "less_than_or_equal", "0.20", 80),
    ("Emergency Drawdown Stop", "emergency", "drawdown_max", "less_than_or_equal", "0.25", 200),
]


def downgrade() -> None:
    op.drop_index(op.f('ix_trading_state_changes_changed_at'), table_name='trading_state_changes')
    op.drop_index(op.f('ix_trading_state_changes_account_id'), table_name='trading_state_changes')
    op.drop_table('trading_state_changes')
    op.drop_table('symbols')
    op.drop_index(op.f('ix_risk_violations_policy_name'), table_name='risk_violations')
    op.drop_index(op.f('ix_risk_violations_detected_at'), table_name='risk_violations')
    op.drop_index(op.f('ix_risk_violations_account_id'), table_name='risk_violations')
    op.drop_table('risk_violations')
    op.drop_table('risk_policies')
    op.drop_table('positions')
    op.drop_index(op.f('ix_order_checks_rejection_reason'), table_name='order_checks')
    op.drop_index(op.f('ix_order_checks_checked_at'), table_name='order_checks')
    op.drop_index('ix_order_checks_account_time', table_name='order_checks')
    op.drop_table('order_checks')
    op.drop_index(op.f('ix_operator_actions_acted_at'), table_name='operator_actions')
    op.drop_table('operator_actions')
    op.drop_index(op.f('ix_liquidations_started_at'), table_name='liquidations')
    op.drop_index(op.f('ix_liquidations_account_id'), table_name='liquidations')
    op.drop_table('liquidations')
    op.drop_index(op.f('ix_liquidation_steps_episode_id'), table_name='liquidation_steps')
    op.drop_table('liquidation_steps')
    op.drop_table('journal_cursors')
    op.drop_index(op.f('ix_fills_filled_at'), table_name='fills')
    op.drop_index(op.f('ix_fills_account_id'), table_name='fills')
    op.drop_table('fills')
    op.drop_index(op.f('ix_emergency_stops_triggered_at'), table_name='emergency_stops')
    op.drop_index(op.f('ix_emergency_stops_account_id'), table_name='emergency_stops')
    op.drop_table('emergency_stops')
    op.drop_index(op.f('ix_dead_letters_task_name'), table_name='dead_letters')
    op.drop_index(op.f('ix_dead_letters_created_at'), table_name='dead_letters')
    op.drop_table('dead_letters')
    op.drop_table('compliance_reports')
    op.drop_index(op.f('ix_alerts_level'), table_name='alerts')
    op.drop_index(op.f('ix_alerts_created_at'), table_name='alerts')
    op.drop_index(op.f('ix_alerts_account_id'), table_name='alerts')
    op.drop_table('alerts')
    op.drop_table('accounts')
