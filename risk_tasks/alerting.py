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

# For each key KEYS[i] and alert id ARGV[i + 1]: {1, window ms} when this alert now holds
# the window, {0, ms left} when another does (flattened into one list). ARGV[1] is the
# window in ms. One call claims a whole chunk: a broad market move raises thousands.
_CLAIM = """
local out = {}
for i, key in ipairs(KEYS) do
  local id = ARGV[i + 1]
  local current = redis.call('GET', key)
  if not current then
    redis.call('SET', key, id, 'PX', ARGV[1])
    out[#out + 1] = 1
    out[#out + 1] = tonumber(ARGV[1])
  else
    out[#out + 1] = current == id and 1 or 0
    out[#out + 1] = redis.call('PTTL', key)
  end
end
return out
"""
CHUNK = 256  # keys per script call: each call holds Redis for well under a millisecond


def make_alert(level: str, kind: str, message: str, account_id: str | None = None,
               policy: str | None = None, details: dict[str, Any] | None = None,
               at: float | None = None, alert_id: str | None = None) -> dict[str, Any]:
    if level not in LEVELS:
        raise ValueError(f"alert level must be one of {LEVELS}")
    return {"alert_id": alert_id or uuid.uuid4().hex, "level": level, "kind": kind, "policy": policy,
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
    return claim_keys(client, [(dedup_key(a), a["alert_id"]) for a in alerts], window_seconds)


def claim_keys(client: redis.Redis, claims: Sequence[tuple[str, str]],
               window_seconds: float) -> list[tuple[bool, float]]:
    """``claim_many_for`` given (dedup key, alert id) pairs: a raiser can claim before it
    builds the alerts, and build only those it won."""
    flat = _each(client, _CLAIM, claims, window_seconds)
    return [(bool(flat[i]), max(int(flat[i + 1]), 0) / 1000.0) for i in range(0, len(flat), 2)]


_EXTEND = """
local n = 0
for i, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[i + 1] then
    n = n + redis.call('PEXPIRE', key, ARGV[1])
  end
end
return n
"""


def extend_many(client: redis.Redis, alerts: Sequence[dict[str, Any]],
                window_seconds: float) -> None:
    """Stretch the windows these alerts hold (their own claims only) to ``window_seconds``."""
    extend_keys(client, [(dedup_key(a), a["alert_id"]) for a in alerts], window_seconds)


def extend_keys(client: redis.Redis, claims: Sequence[tuple[str, str]],
                window_seconds: float) -> None:
    """``extend_many`` given (dedup key, alert id) pairs."""
    _each(client, _EXTEND, claims, window_seconds)


def _each(client: redis.Redis, source: str, claims: Sequence[tuple[str, str]],
          window_seconds: float) -> list:
    """Run a window script over (dedup key, alert id) pairs, a chunk per call, all in one
    pipelined round trip; the replies of the chunks concatenated."""
    if not claims:
        return []
    script = client.register_script(source)
    pipe = client.pipeline(transaction=False)
    for at in range(0, len(claims), CHUNK):
        chunk = claims[at:at + CHUNK]
        script(keys=[key for key, _ in chunk],
               args=[int(window_seconds * 1000), *[alert_id for _, alert_id in chunk]],
               client=pipe)
    replies = pipe.execute()
    return [item for reply in replies for item in (reply if isinstance(reply, list) else [reply])]


def claim(client: redis.Redis, alert: dict[str, Any], window_seconds: float) -> bool:
    return claim_many(client, [alert], window_seconds)[0]


def fresh(alerts: Iterable[dict[str, Any]], won: Iterable[bool]) -> list[dict[str, Any]]:
    return [a for a, w in zip(alerts, won) if w]
