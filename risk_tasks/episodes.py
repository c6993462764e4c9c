"""Liquidation episodes: one per breach, across every monitor process.

The monitor opens an episode (``begin``) before it enqueues ``risk.liquidate_account``;
while the key exists, later ticks that still see the breach enqueue nothing. The
liquidation task keeps it alive while it works (``extend``) and closes it when done
(``end``, only if it is still its own episode). The key expires by itself if the task
never ran (a publish lost with the broker), so a breach can never be ignored for longer
than ``EPISODE_TTL`` seconds.

A message can still be lost after it was published: kombu's Redis transport takes a
message off the queue before it records it as unacknowledged, and a worker killed in
between loses it (for a batching worker, only the first message of a fetch: the rest
are taken and recorded in one step, ``risk_tasks.kombu_patches``). So an episode whose task has left no progress after
``RISK_LIQUIDATION_RESEND_SECONDS`` is sent again by the next tick that sees the breach,
at most once per that period (``resend_key``); the task is idempotent per episode, so a
re-send of a message that was only slow changes nothing.

Episode ids are derived from the account and the tick (``episode_id``), so two beats
or a repeated tick produce the same id and the liquidation task's idempotency does the
rest.
"""

from __future__ import annotations

import redis

EPISODE_TTL = 120  # seconds without progress before a new episode may start

_END = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
_EXTEND = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return 0
"""


def key(account_id: str) -> str:
    return f"risk:liq:episode:{account_id}"


def episode_id(account_id: str, tick_ts: float) -> str:
    return f"liq:{account_id}:{int(round(tick_ts * 1000))}"


def started_at(episode: str) -> float | None:
    """The tick time an episode id was made at (``None`` for an id of another form)."""
    try:
        return int(episode.rsplit(":", 1)[1]) / 1000.0
    except (IndexError, ValueError):
        return None


def resend_key(episode: str) -> str:
    return f"risk:liq:resent:{episode}"


def begin(client: redis.Redis, account_id: str, episode: str, ttl: int = EPISODE_TTL) -> bool:
    """Open an episode; False when one is already running for the account."""
    return bool(client.set(key(account_id), episode, nx=True, ex=ttl))


def current(client: redis.Redis, account_id: str) -> str | None:
    value = client.get(key(account_id))
    return value.decode() if isinstance(value, bytes) else value


def extend(client: redis.Redis, account_id: str, episode: str, ttl: int = EPISODE_TTL) -> bool:
    return bool(client.eval(_EXTEND, 1, key(account_id), episode, ttl))


def end(client: redis.Redis, account_id: str, episode: str) -> bool:
    return bool(client.eval(_END, 1, key(account_id), episode))
