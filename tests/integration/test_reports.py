"""Compliance reports from PostgreSQL: known rows in a period, the figures in JSON, CSV
and HTML, the stored row, the task through a real worker, and ``riskctl report``."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from models import tables as t
from risk_tasks.reports import build_report

pytestmark = pytest.mark.integration

START = datetime(2026, 1, 5, 10, 0, tzinfo=timezone.utc)
END = START + timedelta(hours=1)
ISO_START, ISO_END = "2026-01-05T10:00:00Z", "2026-01-05T11:00:00Z"
LATENCIES_US = [100, 200, 300, 400, 500, 600, 700, 800, 900, 1000]


def at(minutes: float) -> datetime:
    return START + timedelta(minutes=minutes)


def check(i: int, when: datetime, approved: bool, reason: str | None, us: int) -> t.OrderCheckRow:
    return t.OrderCheckRow(journal_id=f"{i}-0", order_id=f"o-{i}", account_id="A1",
                           symbol="BTC", side="BUY", order_type="MARKET",
                           quantity=Decimal(1), approved=approved, rejection_reason=reason,
                           request={}, processing_time_us=us, checked_at=when)


def violation(account: str, policy: str, kind: str, when: datetime) -> t.ViolationRow:
    return t.ViolationRow(account_id=account, policy_name=policy, policy_type=kind,
                          metric="leverage", value=Decimal(12), operator="less_than_or_equal",
                          threshold=Decimal(10), source="monitor", detected_at=when)


@pytest.fixture()
def known_period(rt):  # noqa: ANN001, ANN201
    """One hour with known rows, and rows just outside it on both sides."""
    reasons = [None] * 6 + ["insufficient_margin"] * 3 + ["no_price"]
    rows: list = [check(i, at(i * 5 + 1), r is None, r, us)
                  for i, (r, us) in enumerate(zip(reasons, LATENCIES_US))]
    rows += [check(90, START - timedelta(seconds=1), False, "no_price", 50_000),
             check(91, END, False, "no_price", 50_000)]  # the end is excluded
    rows += [violation("A1", "Max Account Leverage", "hard", at(3)),
             violation("A1", "Max Account Leverage", "hard", at(4)),
             violation("A2", "Max Account Leverage", "hard", at(5)),
             violation("A1", "Daily Drawdown Warning", "soft", at(6)),
             violation("A3", "Max Account Leverage", "hard", END + timedelta(minutes=1))]
    rows += [t.LiquidationRow(episode_id="ep-1", account_id="A2", reason="equity below maintenance",
                              status="completed", equity_before=Decimal(900),
                              maintenance_before=Decimal(1000), equity_after=Decimal(850),
                              realized_pnl=Decimal(-50), positions_closed=[{"symbol": "BTC"}],
                              started_at=at(10), completed_at=at(11)),
             t.LiquidationRow(episode_id="ep-2", account_id="A3", reason="equity below maintenance",
                              status="failed", started_at=at(20), error="gateway down")]
    rows += [t.EmergencyStopRow(stop_id="stop-1", scope="global", reason="exchange outage",
                                triggered_by="alice", triggered_at=at(30), status="resolved",
                                resolved_by="ops", resolved_at=at(40),
                                resolve_reason="exchange back")]
    rows += [t.OperatorActionRow(action="emergency_stop", operator="alice", allowed=True,
                                 reason="exchange outage", acted_at=at(30)),
             t.OperatorActionRow(action="re_enable_trading", operator="mallory", allowed=False,
                                 reason="let me trade", acted_at=at(35)),
             t.OperatorActionRow(action="re_enable_trading", operator="ops", allowed=True,
                                 reason="exchange back", acted_at=at(40))]
    rows += [t.DeadLetterRow(dead_letter_id="dl-1", task_name="risk.liquidate_account",
                             args=["A3", "x", "ep-2"], kwargs={}, error="TransientError: down",
                             attempts=6, status="dead", created_at=at(21))]
    with rt.sessions() as session, session.begin():
        session.add_all(rows)
    return rt


def test_report_of_a_known_hour_has_the_right_figures_in_every_form(known_period, tmp_path):
    # when
    result = build_report(known_period.sessions, str(tmp_path), "custom", ISO_START, ISO_END)
    # then: the headline figures
    assert result["success"] is True
    assert (result["order_checks"], result["rejected"], result["violations"],
            result["liquidations"], result["emergency_stops"], result["operator_actions"],
            result["dead_letters"]) == (10, 4, 4, 2, 1, 3, 1)

    # the JSON
    report = json.loads(open(result["paths"]["json"]).read())
    oc = report["order_checks"]
    assert (oc["total"], oc["approved"], oc["rejected"]) == (10, 6, 4)
    assert oc["by_reason"] == {"insufficient_margin": 3, "no_price": 1}
    # percentile_cont over 100..1000 us: linear interpolation
    assert oc["latency"]["p50_us"] == 550.0
    assert oc["latency"]["p99_us"] == pytest.approx(991.0)
    assert oc["latency"]["max_us"] == 1000
    assert sum(s["approved"] + s["rejected"] for s in oc["series"]) == 10
    vi = report["violations"]
    assert vi["by_policy"][0] == {"policy": "Max Account Leverage", "type": "hard",
                                  "count": 3, "accounts": 2}
    assert vi["top_accounts"][0] == {"account_id": "A1", "count": 3, "policies": 2}
    assert report["liquidations"]["by_status"] == {"completed": 1, "failed": 1}
    stop = report["emergency_stops"]["items"][0]
    assert (stop["triggered_by"], stop["reason"], stop["resolved_by"]) == \
        ("alice", "exchange outage", "ops")
    assert report["operator_actions"]["refused"] == 1
    assert report["operator_actions"]["by_action"]["re_enable_trading"] == \
        {"allowed": 1, "refused": 1}
    assert report["dead_letters"]["by_task"] == {"risk.liquidate_account": {"dead": 1}}

    # the CSV: the same figures, one per line
    rows = list(csv.DictReader(io.StringIO(open(result["paths"]["csv"]).read())))
    figures = {(r["section"], r["item"], r["field"]): r["value"] for r in rows}
    assert figures[("order_checks", "all", "total")] == "10"
    assert figures[("rejections", "insufficient_margin", "count")] == "3"
    assert figures[("latency", "check_order", "p50_us")] == "550.0"
    assert figures[("violations_by_policy", "Max Account Leverage", "count")] == "3"
    assert figures[("violations_by_account", "A1", "count")] == "3"
    assert figures[("emergency_stop", "stop-1", "triggered_by")] == "alice"
    assert figures[("liquidations", "failed", "count")] == "1"
    assert figures[("dead_letters", "risk.liquidate_account", "dead")] == "1"

    # the HTML: charts drawn inline, nothing fetched from elsewhere
    html = open(result["paths"]["html"]).read()
    assert html.count("<svg") >= 4 and "exchange outage" in html and "mallory" in html
    assert "<script" not in html and "http://" not in html.replace(
        'xmlns="http://www.w3.org/2000/svg"', "") and "https://" not in html

    # the row
    with known_period.sessions() as session:
        row = session.scalar(select(t.ComplianceReportRow))
        assert (row.id, row.period, row.period_start, row.period_end) == \
            (result["report_id"], "custom", START, END)
        assert row.summary["order_checks"]["total"] == 10 and row.html == html
        assert row.csv.splitlines()[0] == "section,item,field,value"


def test_building_the_same_period_again_replaces_its_row(known_period, tmp_path):
    first = build_report(known_period.sessions, str(tmp_path), "hourly", ISO_START)
    with known_period.sessions() as session, session.begin():
        session.add(check(50, at(59), True, None, 10))
    second = build_report(known_period.sessions, str(tmp_path), "hourly", "2026-01-05T10:30:00Z")
    assert second["report_id"] == first["report_id"]
    assert (first["order_checks"], second["order_checks"]) == (10, 11)
    with known_period.sessions() as session:
        rows = session.scalars(select(t.ComplianceReportRow)).all()
    assert len(rows) == 1 and rows[0].summary["order_checks"]["total"] == 11


def test_an_empty_period_is_a_report_of_zeros(rt, tmp_path):
    result = build_report(rt.sessions, str(tmp_path), "daily", "2020-02-02")
    assert (result["start"], result["end"]) == ("2020-02-02T00:00:00Z", "2020-02-03T00:00:00Z")
    assert result["order_checks"] == 0 and result["p99_us"] is None
    assert "none in this period" in open(result["paths"]["html"]).read()


def test_the_task_builds_and_stores_a_report_through_a_real_worker(known_period,
                                                                    private_broker, tmp_path):
    private_broker.start_worker(queues="reports", pool="prefork", concurrency=1,
                                env={"RISK_REPORT_DIR": str(tmp_path)})
    # when
    result = private_broker.app.send_task("risk.compliance_report",
                                          ["custom", ISO_START, ISO_END]).get(timeout=60)
    refused = private_broker.app.send_task("risk.compliance_report",
                                           ["weekly", ISO_START, ISO_END]).get(timeout=60)
    # then
    assert result["success"] is True and result["order_checks"] == 10
    assert all(path.startswith(str(tmp_path)) for path in result["paths"].values())
    assert json.loads(open(result["paths"]["json"]).read())["order_checks"]["rejected"] == 4
    with known_period.sessions() as session:
        assert session.get(t.ComplianceReportRow, result["report_id"]).period == "custom"
    assert refused["success"] is False and "weekly" in refused["error"]


def test_riskctl_report_prints_json_and_refuses_a_bad_period(known_period, tmp_path):
    from risk_tasks.cli import main

    runner = CliRunner()
    done = runner.invoke(main, ["report", "--period", "custom", "--start", ISO_START,
                                "--end", ISO_END, "--output-dir", str(tmp_path), "--json"])
    assert done.exit_code == 0, done.output
    result = json.loads(done.stdout)
    assert result["order_checks"] == 10 and result["emergency_stops"] == 1
    shown = runner.invoke(main, ["report", "--period", "custom", "--start", ISO_START,
                                 "--end", ISO_END, "--output-dir", str(tmp_path)])
    assert shown.exit_code == 0 and "order_checks" in shown.stdout and ".html" in shown.stdout
    bad = runner.invoke(main, ["report", "--period", "custom", "--start", ISO_END,
                               "--end", ISO_START, "--output-dir", str(tmp_path)])
    assert bad.exit_code == 2 and "must be after" in bad.output


@pytest.mark.skipif(__import__("shutil").which("chromium") is None,
                    reason="Debian's chromium is not installed")
def test_report_renders_in_headless_chromium(known_period, tmp_path):
    """A busier hour, rendered as a person sees it (``RISK_DOCS_DIR=docs`` keeps the
    picture for the README)."""
    import os
    import random
    import shutil

    from tests.support.flower import png_size, screenshot

    # given: about two thousand checks over the hour, with a burst of rejections
    rng = random.Random(7)
    reasons = ["insufficient_margin", "no_price", "price_collar", "rate_limited",
               "policy_violation", "account_halted"]
    rows = []
    for i in range(2000):
        minute = rng.uniform(0, 59.9)
        burst = 30 <= minute < 40
        rejected = rng.random() < (0.7 if burst else 0.15)
        reason = ("emergency_stop_active" if burst and rng.random() < 0.8
                  else rng.choice(reasons)) if rejected else None
        rows.append(check(1000 + i, at(minute), not rejected, reason,
                          int(rng.lognormvariate(6.3, 0.5))))
    policies = [("Max Account Leverage", "hard"), ("Min Margin Ratio", "hard"),
                ("Daily Drawdown Warning", "soft"), ("Max Drawdown Hard Limit", "hard")]
    for i in range(60):
        name, kind = policies[min(int(rng.expovariate(1.2)), 3)]
        rows.append(violation(f"acct-{int(rng.expovariate(0.2)):03d}", name, kind,
                              at(rng.uniform(0, 59))))
    with known_period.sessions() as session, session.begin():
        session.add_all(rows)
    result = build_report(known_period.sessions, str(tmp_path), "custom", ISO_START, ISO_END)
    # when
    shot = screenshot(f"file://{result['paths']['html']}", tmp_path / "report.png",
                      width=1100, height=2500, wait_ms=1000)
    # then
    assert png_size(shot) == (1100, 2500) and shot.stat().st_size > 50_000
    if os.environ.get("RISK_DOCS_DIR"):
        shutil.copy(shot, os.path.join(os.environ["RISK_DOCS_DIR"], "report.png"))
