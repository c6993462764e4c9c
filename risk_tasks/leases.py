"""Per-account action lease: liquidation and unwinding of one account never overlap.

A lease is a Redis key ``risk:lease:acct:<id>`` holding a token unique to one run of one
task, with a TTL (``RISK_LEASE_TTL_SECONDS``). The holder renews it before every gateway
call and releases it when done; only the holder's token can renew or release it. A
worker that dies holding it blocks the account for at most the TTL.

The lease alone does not make closing safe (a holder could stall past its TTL): every
action also re-reads the positions after taking the lease and before each close, and
every order has a deterministic request id, so a position is never closed twice.
"""

from __future__ import annotations

import time
import uuid

import redis

from risk_tasks.failures import LeaseBusy, TransientError

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class LeaseLost(TransientError):
    """The lease expired or was taken while the action ran: stop, retry from fresh state."""


def lease_key(account_id: str) -> str:
    return f"risk:lease:acct:{account_id}"


class AccountLease:
    def __init__(self, client: redis.Redis, account_id: str, ttl_seconds: float,
                 wait_seconds: float = 0.0, holder: str = "") -> None:
        self.redis = client
        self.account_id = account_id
        self.key = lease_key(account_id)
        self.ttl_ms = max(int(ttl_seconds * 1000), 1)
        self.wait_seconds = wait_seconds
        self.token = f"{holder}:{uuid.uuid4().hex}"
        self.held = False
        self.renewed_at = 0.0  # time.monotonic() when the last acquire or renew was sent

    def took(self, sent_at: float) -> None:
        """The lease was taken (or renewed) by a command sent at ``sent_at`` (monotonic)
        elsewhere, e.g. inside a script that does more in the same round trip."""
        self.held = True
        self.renewed_at = sent_at

    def remaining(self) -> float:
        """Seconds the lease surely still has: counted from when the last acquire or
        renew was *sent*, so it never overestimates. 0 when not held."""
        if not self.held:
            return 0.0
        return max(self.renewed_at + self.ttl_ms / 1000 - time.monotonic(), 0.0)

    def release_in(self, pipe: "redis.client.Pipeline") -> None:
        """Queue the release on a pipeline (sent with whatever else it carries)."""
        if self.held:
            self.held = False
            pipe.eval(_RELEASE, 1, self.key, self.token)

    def acquire(self) -> bool:
        """Take the lease, polling for up to ``wait_seconds``; False if still busy."""
        deadline = time.monotonic() + self.wait_seconds
        pause = 0.01
        while True:
            sent_at = time.monotonic()
            if self.redis.set(self.key, self.token, nx=True, px=self.ttl_ms):
                self.took(sent_at)
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(pause)
            pause = min(pause * 2, 0.1)

    def renew(self) -> None:
        """Extend the lease to a full TTL; ``LeaseLost`` if it is no longer ours."""
        sent_at = time.monotonic()
        if not self.redis.eval(_RENEW, 1, self.key, self.token, self.ttl_ms):
            self.held = False
            raise LeaseLost(f"lease of account {self.account_id} lost")
        self.renewed_at = sent_at

    def release(self) -> None:
        if self.held:
            self.held = False
            self.redis.eval(_RELEASE, 1, self.key, self.token)

    def holder(self) -> str | None:
        value = self.redis.get(self.key)
        return value.decode() if isinstance(value, bytes) else value

    def __enter__(self) -> "AccountLease":
        if not self.acquire():
            raise LeaseBusy(f"account {self.account_id} is busy with another action "
                            f"({self.holder()})")
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.release()
        except redis.RedisError:
            pass  # it expires by itself; the original error (if any) matters more
