"""The pre-trade counters: a batch's outcomes count exactly as one call per outcome."""

from __future__ import annotations

from risk_tasks.metrics import (
    ORDER_CHECK_DURATION, ORDER_CHECKS, ORDER_REPLAYS, ORDERS_REJECTED, observe_check,
    observe_checks,
)
from risk_tasks.pretrade import Outcome


def counts() -> dict[str, float]:
    return {
        "approved": ORDER_CHECKS.labels("approved")._value.get(),
        "rejected": ORDER_CHECKS.labels("rejected")._value.get(),
        "no_price": ORDERS_REJECTED.labels("no_price")._value.get(),
        "rate_limited": ORDERS_REJECTED.labels("rate_limited")._value.get(),
        "replays": ORDER_REPLAYS._value.get(),
        "timed": sum(b.get() for b in ORDER_CHECK_DURATION._buckets),
        "time_sum": ORDER_CHECK_DURATION._sum.get(),
    }


def outcome(approved: bool, reason: str | None = None, us: int = 250,
            replayed: bool = False) -> Outcome:
    return Outcome({"approved": approved, "rejection_reason": reason,
                    "processing_time_us": us}, replayed=replayed)


BATCH = [outcome(True), outcome(False, "no_price", 400), outcome(True, us=100),
         outcome(False, "rate_limited"), outcome(False, "no_price"),
         outcome(True, replayed=True), outcome(False, "no_price", replayed=True)]


def delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: round(after[k] - before[k], 9) for k in before}


def test_a_batch_counts_as_its_outcomes_one_by_one() -> None:
    start = counts()
    observe_checks(BATCH)
    batched = delta(start, counts())
    start = counts()
    for o in BATCH:
        observe_check(o)
    one_by_one = delta(start, counts())
    assert batched == one_by_one == {
        "approved": 2, "rejected": 3, "no_price": 2, "rate_limited": 1, "replays": 2,
        "timed": 5, "time_sum": round((250 + 400 + 100 + 250 + 250) / 1e6, 9)}


def test_an_empty_batch_counts_nothing() -> None:
    start = counts()
    observe_checks([])
    assert delta(start, counts()) == dict.fromkeys(start, 0)
