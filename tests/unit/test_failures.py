"""Failure classes and the retry back-off of action tasks (risk_tasks.failures)."""

from __future__ import annotations

import random

import pytest
import redis
from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy.exc import OperationalError

from risk_tasks.engine.validation import InvalidInput
from risk_tasks.failures import (
    BAD_INPUT_KIND, PERMANENT_KIND, TRANSIENT_KIND, BadInput, LeaseBusy, NoPrice,
    PermanentError, TransientError, backoff_seconds, classify,
)
from risk_tasks.gateways.base import PermanentGatewayError, TransientGatewayError


@pytest.mark.parametrize("exc", [
    TransientError("x"), TransientGatewayError("503"), LeaseBusy("busy"), NoPrice("BTC"),
    redis.ConnectionError("down"), redis.TimeoutError("slow"), SoftTimeLimitExceeded(),
    OperationalError("SELECT 1", {}, Exception("db away")),
])
def test_infrastructure_errors_are_transient(exc: BaseException) -> None:
    assert classify(exc) == TRANSIENT_KIND


@pytest.mark.parametrize("exc", [BadInput("account_id"), InvalidInput("x", "bad")])
def test_bad_input_is_its_own_kind(exc: BaseException) -> None:
    assert classify(exc) == BAD_INPUT_KIND


@pytest.mark.parametrize("exc", [PermanentError("x"), PermanentGatewayError("400"),
                                 ZeroDivisionError(), KeyError("k")])
def test_venue_refusals_and_bugs_are_permanent(exc: BaseException) -> None:
    assert classify(exc) == PERMANENT_KIND


def test_backoff_grows_exponentially_within_equal_jitter_bounds() -> None:
    rng = random.Random(1)
    for retries in range(6):
        ceiling = min(30.0, 0.5 * 2 ** retries)
        for _ in range(200):
            delay = backoff_seconds(retries, 0.5, 30.0, 300, rng)
            assert ceiling / 2 <= delay <= ceiling


def test_backoff_is_capped_by_the_cap_and_half_the_visibility_timeout() -> None:
    rng = random.Random(2)
    assert max(backoff_seconds(20, 0.5, 30.0, 300, rng) for _ in range(500)) <= 30.0
    assert max(backoff_seconds(20, 0.5, 30.0, 15, rng) for _ in range(500)) <= 7.5


def test_backoff_is_jittered() -> None:
    rng = random.Random(3)
    delays = {round(backoff_seconds(4, 0.5, 30.0, 300, rng), 6) for _ in range(50)}
    assert len(delays) > 40


def test_negative_retries_and_zero_base_give_no_wait() -> None:
    assert backoff_seconds(-3, 0.0, 30.0, 300) == 0.0
