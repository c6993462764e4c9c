"""Which interval a compliance report covers, and how bad periods are refused."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from risk_tasks.reports import ReportError, resolve_period, svg_bars, svg_stacked_series, to_csv

NOW = datetime(2026, 3, 10, 14, 27, 5, tzinfo=timezone.utc)


def test_hourly_without_a_start_is_the_last_complete_hour():
    p = resolve_period("hourly", now=NOW)
    assert (p.start, p.end) == (datetime(2026, 3, 10, 13, tzinfo=timezone.utc),
                                datetime(2026, 3, 10, 14, tzinfo=timezone.utc))


def test_daily_without_a_start_is_yesterday_in_utc():
    p = resolve_period("daily", now=NOW)
    assert (p.start, p.end) == (datetime(2026, 3, 9, tzinfo=timezone.utc),
                                datetime(2026, 3, 10, tzinfo=timezone.utc))


def test_a_start_picks_the_hour_that_contains_it_and_offsets_become_utc():
    p = resolve_period("hourly", "2026-03-10T16:45:00+02:00")
    assert (p.start.hour, p.end.hour) == (14, 15)
    assert p.slug == "20260310T140000Z_20260310T150000Z"


def test_custom_takes_start_and_end_as_given():
    p = resolve_period("custom", "2026-03-01T00:00:00Z", "2026-03-01T00:30:00Z")
    assert (p.end - p.start).total_seconds() == 1800


@pytest.mark.parametrize("args, message", [
    (("weekly",), "not one of"),
    (("custom", "2026-03-01"), "needs both"),
    (("custom", "2026-03-02", "2026-03-01"), "must be after"),
    (("custom", "2024-01-01", "2026-01-01"), "at most 366 days"),
    (("hourly", "yesterday"), "not an ISO 8601"),
    (("hourly", "2026-03-01", "2026-03-02"), "start only"),
    (("custom", ["x"], "2026-03-01"), "expected an ISO 8601"),
    ((None,), "not one of"),
])
def test_bad_periods_are_refused_with_a_message(args, message):
    with pytest.raises(ReportError, match=message):
        resolve_period(*args)


def test_charts_escape_labels_and_draw_one_bar_per_item():
    svg = svg_bars([("<script>", 3), ("b", 1)])
    assert svg.count("<rect") == 2 and "<script>" not in svg and "&lt;script&gt;" in svg
    series = [{"start": "2026-03-10T13:00:00Z", "approved": 2, "rejected": 1},
              {"start": "2026-03-10T13:05:00Z", "approved": 0, "rejected": 0}]
    assert svg_stacked_series(series).count("<rect") == 2
    assert "no order checks" in svg_stacked_series(series[1:])


def test_csv_quotes_commas_and_newlines_in_free_text():
    empty = {"total": 0, "approved": 0, "rejected": 0, "approval_rate": None, "by_reason": {},
             "latency": {}, "series": []}
    report = {"period": "custom", "start": "s", "end": "e", "order_checks": empty,
              "violations": {"total": 0, "by_policy": [], "top_accounts": []},
              "liquidations": {"total": 0, "by_status": {}, "items": []},
              "emergency_stops": {"triggered": 1, "items": [{
                  "stop_id": "s1", "scope": "global", "account_id": None,
                  "reason": 'outage, "big"\nreally', "triggered_by": "alice",
                  "triggered_at": "t", "status": "active", "resolved_by": None,
                  "resolved_at": None, "resolve_reason": None}]},
              "operator_actions": {"total": 0, "refused": 0, "by_action": {}},
              "alerts": {"by_level": {}}, "dead_letters": {"total": 0, "by_task": {}}}
    import csv
    import io

    rows = list(csv.reader(io.StringIO(to_csv(report))))
    assert ["emergency_stop", "s1", "reason", 'outage, "big"\nreally'] in rows
