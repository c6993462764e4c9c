"""Alerts: their shape and their de-duplication, shared by whoever raises them.

An alert is a JSON dict::

    {"alert_id": "...", "level": "warning" | "critical" | "emergency",
     "kind": "policy_violation" | "liquidation" | "circuit_breaker" | "emergency_stop"
             | "platform_fault" | "dead_letter" | ...,
     "policy": "Max Account Leverage" | None, "account_id": "A1" | None,
     "message": "...", "details": {...}, "at": 1795400000.0}

Alerts with the same kind, policy and account are sent once per window (5 minutes by
default) across every instance. The window is *claimed* in Redis with the alert's id: a
raiser that sees many breaches at once (the monitor) claims in one pipelined round
trip and enqueues only the alerts it won; ``risk.send_alert`` claims again with the same
id, which succeeds for its own alert and fails for a duplicate.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from typing import Any, Iterable, Sequence

import redis

LEVELS = ("warning", "critical", "emergency")

# Returns {1, window} when this alert holds the window, {0, ms left} when another does.
_CLAIM = """
local current = redis.call('GET', KEYS[1])
if not current then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return {1, tonumber(ARGV[2])}
end
if current == ARGV[1] then return {1, redis.call('PTTL', KEYS[1])} end
return {0, redis.call('PTTL', KEYS[1])}
"""


def make_alert(level: str, kind: str, message: str, account_id: str | None = None,
               policy: str | None = None, details: dict[str, Any] | None = None,
               at: float | None = None) -> dict[str, Any]:
    if level not in LEVELS:
        raise ValueError(f"alert level must be one of {LEVELS}")
    return {"alert_id": uuid.uuid4().hex, "level": level, "kind": kind, "policy": policy,
            "account_id": account_id, "message": message, "details": details or {},
            "at": time.time() if at is None else at}


def alert_repr(alert: dict[str, Any]) -> str:
    """What Flower shows as a ``risk.send_alert`` task's arguments: Celery's own
    ``saferepr`` of an alert costs more CPU than sending it."""
    return f"[{alert.get('level')} {alert.get('kind')} {alert.get('account_id') or ''}]"


def dedup_key(alert: dict[str, Any]) -> str:
    return dedup_key_of(alert.get("kind"), alert.get("policy"), alert.get("account_id"))


def dedup_key_of(kind: str | None, policy: str | None, account_id: str | None) -> str:
    parts = "\x1f".join(str(part or "") for part in (kind, policy, account_id))
    return "risk:alert:dedup:" + hashlib.sha1(parts.encode()).hexdigest()


def claim_many(client: redis.Redis, alerts: Sequence[dict[str, Any]],
               window_seconds: float) -> list[bool]:
    """Claim the de-duplication window of each alert; True where this alert won it."""
    return [won for won, _ in claim_many_for(client, alerts, window_seconds)]


def claim_many_for(client: redis.Redis, alerts: Sequence[dict[str, Any]],
                   window_seconds: float) -> list[tuple[bool, float]]:
    """Like ``claim_many``, with the seconds left of the window each alert found (its
    own or another's), so a raiser can skip a known-taken window until it ends.

    A raiser that sends its alerts after claiming may claim for a short hold only and
    ``extend_many`` once they are sent: if the send fails, the hold lapses by itself
    and a later raise goes out, rather than the whole window passing in silence."""
    return [(bool(won), max(int(left), 0) / 1000.0)
            for won, left in _each(client, _CLAIM, alerts, window_seconds)]


_EXTEND = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""


def extend_many(client: redis.Redis, alerts: Sequence[dict[str, Any]],
                window_seconds: float) -> None:
    """Stretch the windows these alerts hold (their own claims only) to ``window_seconds``."""
    _each(client, _EXTEND, alerts, window_seconds)


def _each(client: redis.Redis, source: str, alerts: Sequence[dict[str, Any]],
          window_seconds: float) -> list:
    """Run a window script on each alert's dedup key, in one pipelined round trip."""
    if not alerts:
        return []
    script = client.register_script(source)
    pipe = client.pipeline(transaction=False)
    for alert in alerts:
        script(keys=[dedup_key(alert)], args=[alert["alert_id"], int(window_seconds * 1000)],
               client=pipe)
    return pipe.execute()


def claim(client: redis.Redis, alert: dict[str, Any], window_seconds: float) -> bool:
    return claim_many(client, [alert], window_seconds)[0]


def fresh(alerts: Iterable[dict[str, Any]], won: Iterable[bool]) -> list[dict[str, Any]]:
    return [a for a, w in zip(alerts, won) if w]
