"""The three kinds of failure of an action task, and how each is treated.

- **Transient** (``TransientError``, a gateway timeout or 5xx, Redis connection loss,
  the database away): retried with jittered exponential back-off, at most
  ``RISK_TASK_MAX_RETRIES`` times, then dead-lettered.
- **Permanent** (``PermanentError``, a gateway 4xx, or any unexpected exception, which
  is a bug until proven otherwise): dead-lettered at once; retrying would fail the same
  way and could do harm in between.
- **Bad input** (``BadInput``): rejected once, dead-lettered, never retried.

A limit breach is none of these: it is a normal result.
"""

from __future__ import annotations

import random

import redis
from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy.exc import OperationalError

from risk_tasks.engine.validation import InvalidInput


class TransientError(Exception):
    """A failure that may pass by itself: retried with back-off."""


class PermanentError(Exception):
    """A failure that will repeat: dead-lettered without retries."""


class BadInput(PermanentError):
    """Arguments that can never succeed: rejected once, dead-lettered."""


class LeaseBusy(TransientError):
    """Another action holds the account's lease: try again later."""


class NoPrice(TransientError):
    """A position to close has no mark price yet."""


TRANSIENT: tuple[type[BaseException], ...] = (
    TransientError, redis.ConnectionError, redis.TimeoutError, OperationalError,
    # The soft time limit interrupts a slow step; progress is saved, a retry resumes.
    SoftTimeLimitExceeded,
)

TRANSIENT_KIND = "transient"
PERMANENT_KIND = "permanent"
BAD_INPUT_KIND = "bad_input"


def classify(exc: BaseException) -> str:
    """``transient``, ``bad_input`` or ``permanent``."""
    if isinstance(exc, (BadInput, InvalidInput)):
        return BAD_INPUT_KIND
    if isinstance(exc, TRANSIENT):
        return TRANSIENT_KIND
    return PERMANENT_KIND


def backoff_seconds(retries: int, base: float, cap: float, visibility_timeout: float,
                    rng: random.Random | None = None) -> float:
    """Jittered exponential back-off ("equal jitter"): with
    ``c = min(cap, base * 2**retries)``, a random time in ``[c / 2, c]`` seconds, so
    retries of many tasks spread out but none comes back at once.

    The cap is further held to half the broker's visibility timeout: a retry message
    waits inside a worker until its ETA, and one held longer than the visibility timeout
    would be delivered again.
    """
    ceiling = min(cap, visibility_timeout / 2.0, base * (2 ** max(retries, 0)))
    ceiling = max(ceiling, 0.0)
    return ceiling / 2.0 + (rng or random).uniform(0.0, ceiling / 2.0)
