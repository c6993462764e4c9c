"""Liquidation task (queue ``liquidation``): ``risk.liquidate_account``.

A thin adapter over ``risk_tasks.actions.Liquidation``, which makes an episode safe to
run any number of times. ``acks_late`` with ``reject_on_worker_lost``: a worker that dies
mid-way leaves the message to be delivered again (after the broker's visibility timeout),
and the next run resumes the episode where it stopped. Transient failures retry with
back-off; what still fails is dead-lettered and the episode recorded as ``failed``
(``riskctl dlq replay`` resumes it).
"""

from __future__ import annotations

from typing import Any

from risk_tasks import actions
from risk_tasks.actions import Notify
from risk_tasks.gateways import gateway_for
from risk_tasks.runtime import runtime
from risk_tasks.tasks.base import risk_task


def _keys(account_id: Any = None, reason: Any = None, episode_id: Any = None,
          *_: Any, **__: Any) -> tuple[Any, Any]:
    return episode_id, account_id


def _failed(rt, args: list, kwargs: dict, entry: dict) -> None:  # noqa: ANN001
    try:
        account_id, reason, episode_id = (list(args) + [None, None, None])[:3]
        account_id = kwargs.get("account_id", account_id)
        reason = kwargs.get("reason", reason)
        episode_id = kwargs.get("episode_id", episode_id)
    except AttributeError:
        return
    actions.liquidation_failed(rt, account_id, reason, episode_id, entry["error"])


def notify(alert: dict) -> None:
    from risk_tasks.app import send_alert

    send_alert(alert)


def liquidate(account_id: Any, reason: Any, episode_id: Any, alert: Notify,
              batched: bool = False) -> dict:
    rt = runtime()
    account, why, episode = actions.validate_liquidation(account_id, reason, episode_id)
    return actions.Liquidation(rt, gateway_for(rt), account, why, episode, alert,
                               alert_again=batched).run()


def _in_batch(args: list, kwargs: dict, alert: Notify,
              prepared: tuple[actions.Liquidation, Any] | None = None) -> dict:
    if prepared is None:
        return liquidate(*args, **kwargs, alert=alert, batched=True)
    episode, first = prepared
    episode.notify = alert
    return episode.run(first)


def _steps(args: list, kwargs: dict, alert: Notify,
           prepared: tuple[actions.Liquidation, Any] | None = None) -> Any:
    """The episode as steps (its closes sent with the batch's), or None to run it after
    the others: one whose lease was busy or whose read failed (it takes for itself, and
    may be waiting on an episode of this batch, such as a duplicate of its own)."""
    if prepared is None:
        return None
    episode, first = prepared
    if first is None or not first[0]:
        return None
    episode.notify = alert
    return episode.steps(first)


def _prepare(calls: list) -> list[tuple[actions.Liquidation, Any] | None]:
    """A batch's episodes, each with its lease taken and its account read, all in one
    round trip (``actions.take_all``); None for a call whose arguments are bad (it fails
    as it would alone)."""
    rt = runtime()
    gateway = gateway_for(rt)
    episodes: list[actions.Liquidation | None] = []
    for call in calls:
        try:
            account, why, episode = actions.validate_liquidation(*call.args, **call.kwargs)
        except (actions.BadInput, TypeError):
            episodes.append(None)
            continue
        episodes.append(actions.Liquidation(rt, gateway, account, why, episode, notify,
                                            alert_again=True))
    firsts = iter(actions.take_all(rt.redis, [e for e in episodes if e is not None]))
    return [None if e is None else (e, next(firsts)) for e in episodes]


@risk_task("risk.liquidate_account", acks_late=True, reject_on_worker_lost=True,
           dead_letters=True, idempotency_key=_keys, on_dead_letter=_failed,
           soft_time_limit=120, time_limit=150,
           Strategy="risk_tasks.batches:batched", batch_run=_in_batch, batch_prepare=_prepare,
           batch_steps=_steps)
def liquidate_account(account_id: Any, reason: Any, episode_id: Any) -> dict:
    """Liquidate ``account_id`` for one breach (``episode_id``): cancel its orders, then
    close whole positions, largest notional first, until ``equity >= remaining notional *
    imr`` (everything when ``equity <= 0``). Idempotent per ``episode_id``. On a solo
    worker, messages that arrive together run as a batch (``risk_tasks.batches``)."""
    return liquidate(account_id, reason, episode_id, notify)
