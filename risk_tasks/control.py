"""Emergency stop and resume, for the platform or one account.

The state lives in Redis, so a stop seen by one worker is seen by all of them at once;
each change, with who, why and when, goes to PostgreSQL through the journal in the same
transaction. Control results have the shape ``{success, message, status}``.

Stopping is idempotent: a second stop while one is active returns the active stop. Only
operators on ``RISK_OPERATORS`` may resume; a refused attempt is recorded too.
"""

from __future__ import annotations

import uuid
from typing import Any

from risk_tasks.engine.model import TradingState
from risk_tasks.engine.validation import InvalidInput, identifier
from risk_tasks.state.store import StateError, StateStore

MAX_REASON = 1000
SCOPES = ("global", "account")


def _validate(reason: Any, who: Any, who_field: str, scope: Any,
              account_id: Any) -> tuple[str, str, str, str | None]:
    if not isinstance(reason, str) or not reason.strip():
        raise InvalidInput("reason", "is required (a non-empty string)")
    if len(reason) > MAX_REASON:
        raise InvalidInput("reason", f"must be at most {MAX_REASON} characters")
    try:
        reason.encode()
    except UnicodeEncodeError:  # a lone surrogate: JSON carries it, Redis and UTF-8 cannot
        raise InvalidInput("reason", "must be valid UTF-8 text") from None
    who = identifier({who_field: who}, who_field)
    if scope not in SCOPES:
        raise InvalidInput("scope", "must be 'global' or 'account'")
    if scope == "account":
        account_id = identifier({"account_id": account_id}, "account_id")
    elif account_id is not None:
        raise InvalidInput("account_id", "is only allowed with scope 'account'")
    return reason.strip(), who, scope, account_id


def emergency_status(store: StateStore) -> dict[str, Any]:
    platform = store.platform_state()
    halted = store.non_active_accounts()
    return {
        "state": platform["state"],
        "active": platform["state"] == TradingState.HALTED.value,
        "reason": platform["reason"],
        "by": platform["by"],
        "at": platform["at"],
        "stop_id": platform["stop_id"],
        "restricted_accounts": halted[:1000],
        "restricted_account_count": len(halted),
    }


def trigger_emergency_stop(store: StateStore, reason: Any, triggered_by: Any,
                           scope: Any = "global", account_id: Any = None,
                           source: str = "operator") -> dict[str, Any]:
    """Halt the platform (``scope='global'``) or one account. Returns the control result
    plus ``stop_id`` and ``created`` (False when a stop was already active)."""
    try:
        reason, triggered_by, scope, account_id = _validate(
            reason, triggered_by, "triggered_by", scope, account_id)
    except InvalidInput as exc:
        return _result(store, False, f"invalid request: {exc}")
    stop_id = f"stop-{uuid.uuid4().hex}"
    now = store.clock.time()
    stop = {"t": "estop", "stop_id": stop_id, "scope": scope, "account_id": account_id,
            "reason": reason, "triggered_by": triggered_by, "at": now, "source": source}
    action = {"t": "operator_action", "action": "emergency_stop", "operator": triggered_by,
              "allowed": True, "reason": reason, "at": now,
              "details": {"scope": scope, "account_id": account_id, "stop_id": stop_id,
                          "source": source}}
    records = [stop, action] if source == "operator" else [stop]
    if scope == "global":
        before, changed = store.set_platform_state(TradingState.HALTED, reason, triggered_by,
                                                   stop_id, extra_records=records)
        if not changed:
            stop_id = before.get("stop_id") or stop_id
    else:
        try:
            _, changed = store.set_account_state(account_id, TradingState.HALTED, reason,
                                                 triggered_by, stop_id, extra_records=records)
        except StateError as exc:
            return _result(store, False, exc.message)
        if not changed:
            _, meta = store.read_account(account_id)
            stop_id = meta.get("stop_id") or stop_id
    where = "trading" if scope == "global" else f"account {account_id}"
    message = (f"emergency stop {stop_id}: {where} halted" if changed
               else f"{where} was already halted ({stop_id})")
    out = _result(store, True, message)
    out.update(stop_id=stop_id, created=changed, scope=scope, account_id=account_id)
    return out


def re_enable_trading(store: StateStore, authorized_by: Any, reason: Any,
                      scope: Any = "global", account_id: Any = None) -> dict[str, Any]:
    """Resume trading; refused (and recorded) unless ``authorized_by`` is an operator."""
    try:
        reason, authorized_by, scope, account_id = _validate(
            reason, authorized_by, "authorized_by", scope, account_id)
    except InvalidInput as exc:
        return _result(store, False, f"invalid request: {exc}")
    now = store.clock.time()
    allowed = authorized_by in store.settings.operators
    details = {"scope": scope, "account_id": account_id}
    if not allowed:
        store.journal({"t": "operator_action", "action": "re_enable_trading",
                       "operator": authorized_by, "allowed": False, "reason": reason,
                       "at": now, "details": details})
        return _result(store, False, f"{authorized_by} is not allowed to resume trading")
    if scope == "global":
        stop_id = store.platform_state()["stop_id"]
    else:
        account, meta = store.read_account(account_id)
        if account is None:
            return _result(store, False, f"unknown account {account_id}")
        stop_id = meta.get("stop_id") or None
    details["stop_id"] = stop_id
    records: list[dict] = [{"t": "operator_action", "action": "re_enable_trading",
                            "operator": authorized_by, "allowed": True, "reason": reason,
                            "at": now, "details": details}]
    if stop_id:
        records.append({"t": "estop_resolved", "stop_id": stop_id, "resolved_by": authorized_by,
                        "reason": reason, "at": now})
    if scope == "global":
        _, changed = store.set_platform_state(TradingState.ACTIVE, reason, authorized_by, None,
                                              extra_records=records)
    else:
        _, changed = store.set_account_state(account_id, TradingState.ACTIVE, reason,
                                             authorized_by, None, extra_records=records)
    if not changed:
        store.journal(records[0])
    where = "trading" if scope == "global" else f"account {account_id}"
    return _result(store, True, f"{where} resumed by {authorized_by}" if changed
                   else f"{where} was already active")


def _result(store: StateStore, success: bool, message: str) -> dict[str, Any]:
    return {"success": success, "message": message, "status": emergency_status(store)}
