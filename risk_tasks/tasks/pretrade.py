"""Pre-trade tasks (queue ``pretrade``): the hot path.

At-most-once by design: the pretrade worker runs without ack emulation, a caller that
times out fails closed and may retry under the same ``order_id``, which returns the
first decision. Nothing here touches PostgreSQL.
"""

from __future__ import annotations

from typing import Any

from risk_tasks.accounts import account_metrics
from risk_tasks.metrics import observe_check, observe_checks
from risk_tasks.pretrade import MAX_BATCH, Outcome
from risk_tasks.result_backend import SuccessTarget
from risk_tasks.runtime import runtime
from risk_tasks.settings import get_settings
from risk_tasks.tasks.base import risk_task

# Celery renders every result for its success log line and event, whether or not they
# are on; a decision is a nested dict, so it renders only its first characters.
RESULT_REPR = 96
# On the solo-pool pretrade worker these run through a lean strategy (see its module).
FAST = "risk_tasks.fastpath:pretrade"
# No task events unless RISK_PRETRADE_TASK_EVENTS (see Settings.pretrade_task_events):
# with events on, the pretrade worker saturated at 301 to 308 checks/s against 493 to
# 497 without (bench/pretrade.py --quick, interleaved, 2026-12-01).
EVENTS = get_settings().pretrade_task_events


def _check(order: Any, *, success: SuccessTarget | None = None) -> tuple[dict, bool]:
    """The decision, and whether its commit also stored it as the task's result (given
    ``success``, where the task's result goes: see risk_tasks.result_backend)."""
    outcome = runtime().pretrade.check(order, success)
    observe_check(outcome)
    return outcome.result, outcome.replied


@risk_task("risk.check_order", ignore_result=False, acks_late=False,
           resultrepr_maxsize=RESULT_REPR, Strategy=FAST, send_events=EVENTS,
           run_replying=_check)
def check_order(order: Any) -> dict:
    """Approve or reject one order. Malformed input of any shape is ``invalid_request``."""
    return _check(order)[0]


def _check_batch(orders: Any, *, success: SuccessTarget | None = None) -> tuple[list, bool]:
    """The decisions, and whether the batch's commit also stored them as the task's
    result (as ``_check``)."""
    service = runtime().pretrade
    if not isinstance(orders, list):
        return [service.check(orders).result], False
    if len(orders) > MAX_BATCH:
        return [service.check({"batch": f"more than {MAX_BATCH} orders in one batch"}).result
                for _ in orders], False
    outcomes: list[Outcome] = service.check_batch(orders, success)
    observe_checks(outcomes)
    return [o.result for o in outcomes], bool(outcomes) and outcomes[0].replied


@risk_task("risk.check_order_batch", ignore_result=False, acks_late=False,
           resultrepr_maxsize=RESULT_REPR, Strategy=FAST, send_events=EVENTS,
           run_replying=_check_batch)
def check_order_batch(orders: Any) -> list:
    """Decisions for many orders, in the same order (at most 1000 per batch)."""
    return _check_batch(orders)[0]


@risk_task("risk.get_risk_metrics", ignore_result=False, acks_late=False,
           resultrepr_maxsize=RESULT_REPR, Strategy=FAST, send_events=EVENTS)
def get_risk_metrics(account_id: Any) -> dict:
    """Current metrics of one account, with its positions and liquidation prices."""
    return account_metrics(runtime().store, account_id)


@risk_task("risk.ping", ignore_result=False, acks_late=False,
           resultrepr_maxsize=RESULT_REPR, send_events=EVENTS)
def ping() -> str:
    """Liveness of the pretrade path (health checks; the benchmark's no-op baseline)."""
    return "pong"
