"""Risk policies: a condition ``metric operator threshold`` that must hold.

Undefined metrics are read as the limit they stand for, so that a policy never passes
because a number is missing: ``margin_ratio`` without margin used is +infinity (no
risk), ``leverage`` and ``concentration_<S>`` with equity <= 0 are +infinity while
there is exposure (0 without), and a symbol not held has concentration 0.
"""

from __future__ import annotations

import operator as op
from decimal import Decimal
from typing import Callable, Iterable, Sequence

from risk_tasks.engine.model import ZERO, Metrics, Policy, PolicyType, Violation

INFINITY = Decimal("Infinity")

OPERATORS: dict[str, Callable[[Decimal, Decimal], bool]] = {
    "less_than": op.lt,
    "less_than_or_equal": op.le,
    "greater_than": op.gt,
    "greater_than_or_equal": op.ge,
    "equal": op.eq,
}
BASE_METRICS = ("leverage", "margin_ratio", "drawdown_daily", "drawdown_max")
CONCENTRATION_PREFIX = "concentration_"
SCOPES = ("account", "symbol", "strategy")

DEFAULT_POLICIES: tuple[Policy, ...] = (
    Policy("Max Account Leverage", PolicyType.HARD, "leverage", "less_than_or_equal",
           Decimal("10"), priority=100),
    Policy("Min Margin Ratio", PolicyType.HARD, "margin_ratio", "greater_than_or_equal",
           Decimal("1.0"), priority=90),
    Policy("Daily Drawdown Warning", PolicyType.SOFT, "drawdown_daily", "less_than_or_equal",
           Decimal("0.10"), priority=50),
    Policy("Max Drawdown Hard Limit", PolicyType.HARD, "drawdown_max", "less_than_or_equal",
           Decimal("0.20"), priority=80),
    Policy("Emergency Drawdown Stop", PolicyType.EMERGENCY, "drawdown_max",
           "less_than_or_equal", Decimal("0.25"), priority=200),
)


def is_known_metric(metric: str) -> bool:
    if metric in BASE_METRICS:
        return True
    return metric.startswith(CONCENTRATION_PREFIX) and len(metric) > len(CONCENTRATION_PREFIX)


def metric_value(metrics: Metrics, metric: str) -> Decimal | None:
    """The value a policy compares, or None when the metric is undefined."""
    if metric == "leverage":
        return metrics.leverage
    if metric == "margin_ratio":
        return metrics.margin_ratio
    if metric == "drawdown_daily":
        return metrics.drawdown_daily
    if metric == "drawdown_max":
        return metrics.drawdown_max
    symbol = metric[len(CONCENTRATION_PREFIX):]
    if symbol not in metrics.concentration:
        return ZERO
    return metrics.concentration[symbol]


def comparable_value(metrics: Metrics, metric: str) -> Decimal:
    """``metric_value`` with undefined values read as explained in the module docstring."""
    value = metric_value(metrics, metric)
    if value is not None:
        return value
    if metric == "margin_ratio":
        return INFINITY
    # leverage or a concentration with equity <= 0: infinite while there is exposure.
    return INFINITY if metrics.notional else ZERO


def applies(policy: Policy, account_id: str, symbols: Iterable[str],
            strategy_id: str | None) -> bool:
    """Whether a policy's scope covers this account, its held symbols and the strategy.

    ``account`` scope: every account, or the one named by ``scope_id``. ``symbol``:
    accounts that hold ``scope_id``. ``strategy``: orders of that strategy (pre-trade
    only; the monitor passes ``strategy_id=None``).
    """
    if not policy.enabled:
        return False
    if policy.scope == "account":
        return not policy.scope_id or policy.scope_id in ("*", account_id)
    if policy.scope == "symbol":
        return policy.scope_id in symbols
    if policy.scope == "strategy":
        return strategy_id is not None and policy.scope_id == strategy_id
    return False


def order_policies(policies: Iterable[Policy]) -> tuple[Policy, ...]:
    """Enabled policies, highest priority first (then by name, for a stable order)."""
    return tuple(sorted((p for p in policies if p.enabled), key=lambda p: (-p.priority, p.name)))


def evaluate(
    metrics: Metrics,
    policies: Sequence[Policy],
    account_id: str,
    strategy_id: str | None = None,
    max_leverage: Decimal | None = None,
) -> list[Violation]:
    """Every violated policy, in the order of ``policies`` (callers sort by priority).

    ``max_leverage`` is the account's own cap; it acts as a hard leverage policy.
    """
    held = metrics.notional_by_symbol
    violations = []
    for policy in policies:
        if not applies(policy, account_id, held, strategy_id):
            continue
        value = comparable_value(metrics, policy.metric)
        if not OPERATORS[policy.operator](value, policy.threshold):
            violations.append(Violation(policy.name, policy.type, policy.metric,
                                        metric_value(metrics, policy.metric),
                                        policy.operator, policy.threshold))
    if max_leverage is not None:
        value = comparable_value(metrics, "leverage")
        if value > max_leverage:
            violations.append(Violation("Account Max Leverage", PolicyType.HARD, "leverage",
                                        metrics.leverage, "less_than_or_equal", max_leverage))
    return violations
