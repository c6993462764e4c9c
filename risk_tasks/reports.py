"""Compliance reports: what the engine decided and did over a period, from PostgreSQL.

``build_report(sessions, settings, period, start, end)`` reads the system of record,
writes the report three ways under ``RISK_REPORT_DIR/<period>/`` and stores it in
``compliance_reports`` (one row per period and interval; building it again replaces it):

- **JSON**: every figure, for programs;
- **CSV**: the same figures in long form, ``section,item,field,value``, one line each,
  for spreadsheets;
- **HTML**: one self-contained page for a person, with charts drawn here as inline SVG
  (no script, no stylesheet or font from elsewhere: it opens offline and prints).

Contents: order checks by result and reason, decision latency percentiles, checks over
time, violations by policy and the accounts with most violations, liquidations,
emergency stops with who and why (and who resumed), operator actions (including refused
ones), alerts, and dead letters. Periods: ``hourly`` and ``daily`` (UTC; without a start,
the last complete one) and ``custom`` (start and end required).
"""

from __future__ import annotations

import csv
import io
import math
import os
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from html import escape
from pathlib import Path
from typing import Any, Iterable

import orjson
from sqlalchemy import Float, and_, case, cast, func, select, text
from sqlalchemy.orm import Session, sessionmaker

from models import tables as t

PERIODS = {"hourly": timedelta(hours=1), "daily": timedelta(days=1)}
MAX_SPAN = timedelta(days=366)
TOP_N = 10
LIST_LIMIT = 200  # rows of each listing (stops, actions, liquidations, dead letters)
PERCENTILES = (0.5, 0.9, 0.99, 0.999)


class ReportError(ValueError):
    """A period that cannot be reported (bad name, bad dates, end before start)."""


# -- PERIODS --

@dataclass(frozen=True)
class Period:
    name: str
    start: datetime
    end: datetime

    @property
    def slug(self) -> str:
        return f"{self.start:%Y%m%dT%H%M%SZ}_{self.end:%Y%m%dT%H%M%SZ}"


def parse_time(value: Any, field: str) -> datetime:
    """An ISO 8601 time (naive means UTC) or epoch seconds, as an aware UTC datetime."""
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        parsed = datetime.fromtimestamp(float(value), tz=timezone.utc)
    elif isinstance(value, str) and value.strip():
        text = value.strip()
        try:
            parsed = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
        except ValueError:
            raise ReportError(f"{field}: {value!r} is not an ISO 8601 time "
                              "(for example 2026-11-01T00:00:00Z)") from None
    else:
        raise ReportError(f"{field}: expected an ISO 8601 time, got {value!r}")
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)


def resolve_period(period: Any, start: Any = None, end: Any = None,
                   now: datetime | None = None) -> Period:
    """The interval a report covers.

    ``hourly`` / ``daily`` without ``start``: the last complete UTC hour / day before
    ``now``; with ``start``: the hour / day that contains it (``end`` may not be given).
    ``custom``: ``start`` and ``end`` both required, at most 366 days apart.
    """
    if period not in (*PERIODS, "custom"):
        raise ReportError(f"period: {period!r} is not one of hourly, daily, custom")
    if period == "custom":
        if start in (None, "") or end in (None, ""):
            raise ReportError("period custom needs both start and end")
        begin, finish = parse_time(start, "start"), parse_time(end, "end")
    else:
        if end not in (None, ""):
            raise ReportError(f"period {period} takes a start only (its length is fixed)")
        length = PERIODS[period]
        anchor = parse_time(start, "start") if start not in (None, "") else \
            (now or datetime.now(timezone.utc)).astimezone(timezone.utc) - length
        begin = anchor.replace(minute=0, second=0, microsecond=0)
        if period == "daily":
            begin = begin.replace(hour=0)
        finish = begin + length
    if finish <= begin:
        raise ReportError(f"end ({finish:%Y-%m-%dT%H:%M:%SZ}) must be after start "
                          f"({begin:%Y-%m-%dT%H:%M:%SZ})")
    if finish - begin > MAX_SPAN:
        raise ReportError("a report covers at most 366 days")
    return Period(period, begin, finish)


# -- WHAT THE DATABASE SAYS --

def _num(value: Any) -> Any:
    """JSON-friendly numbers: Decimals as floats (money is reported, not computed, here)."""
    if isinstance(value, Decimal):
        return float(value)
    return value


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _bucket_seconds(p: Period) -> int:
    """Width of one bar of the checks-over-time chart: about 12 to 60 bars."""
    span = (p.end - p.start).total_seconds()
    for width in (60, 300, 900, 3600, 6 * 3600, 86_400, 7 * 86_400):
        if span / width <= 60:
            return width
    return 30 * 86_400


def collect(session: Session, p: Period, top_n: int = TOP_N) -> dict[str, Any]:
    """Every figure of the report for ``p`` (half-open: ``start <= time < end``)."""
    postgres = session.bind.dialect.name == "postgresql"
    return {
        "period": p.name, "start": _iso(p.start), "end": _iso(p.end),
        "generated_at": _iso(datetime.now(timezone.utc)),
        "order_checks": _order_checks(session, p, postgres),
        "violations": _violations(session, p, top_n),
        "liquidations": _liquidations(session, p),
        "emergency_stops": _emergency_stops(session, p),
        "operator_actions": _operator_actions(session, p),
        "alerts": _alerts(session, p),
        "dead_letters": _dead_letters(session, p),
    }


def _order_checks(session: Session, p: Period, postgres: bool) -> dict[str, Any]:
    oc = t.OrderCheckRow
    within = and_(oc.checked_at >= p.start, oc.checked_at < p.end)
    total, approved = session.execute(
        select(func.count(), func.coalesce(func.sum(case((oc.approved, 1), else_=0)), 0))
        .where(within)).one()
    reasons = session.execute(
        select(oc.rejection_reason, func.count()).where(within, oc.approved.is_(False))
        .group_by(oc.rejection_reason).order_by(func.count().desc(), oc.rejection_reason)).all()
    latency: dict[str, Any] = {}
    if total:
        if postgres:
            columns = [func.percentile_cont(q).within_group(oc.processing_time_us)
                       for q in PERCENTILES]
            values = session.execute(select(*columns, func.avg(oc.processing_time_us),
                                            func.max(oc.processing_time_us))
                                     .where(within)).one()
        else:  # SQLite, for a first look: the same figures computed here
            times = sorted(session.scalars(select(oc.processing_time_us).where(within)))
            values = [_percentile(times, q) for q in PERCENTILES] + \
                [sum(times) / len(times), times[-1]]
        for q, v in zip(PERCENTILES, values):
            latency[f"p{q * 100:g}_us"] = round(float(v), 1)
        latency["mean_us"] = round(float(values[-2]), 1)
        latency["max_us"] = int(values[-1])
    width = _bucket_seconds(p)
    epoch = func.date_part("epoch", oc.checked_at) if postgres else \
        cast(func.strftime("%s", oc.checked_at), Float)
    slot = func.floor((epoch - p.start.timestamp()) / width)
    # GROUP BY 1: the slot expression carries bound parameters, which PostgreSQL would
    # not match between the select list and a repeated GROUP BY expression.
    series_rows = session.execute(
        select(slot, func.count(), func.sum(case((oc.approved, 1), else_=0)))
        .where(within).group_by(text("1")).order_by(text("1"))).all()
    counts = {int(s): (int(n), int(a or 0)) for s, n, a in series_rows}
    slots = math.ceil((p.end - p.start).total_seconds() / width)
    series = [{"start": _iso(p.start + timedelta(seconds=i * width)),
               "approved": counts.get(i, (0, 0))[1],
               "rejected": counts.get(i, (0, 0))[0] - counts.get(i, (0, 0))[1]}
              for i in range(slots)]
    return {
        "total": int(total), "approved": int(approved), "rejected": int(total - approved),
        "approval_rate": round(approved / total, 4) if total else None,
        "by_reason": {r or "unknown": int(n) for r, n in reasons},
        "latency": latency, "bucket_seconds": width, "series": series,
    }


def _percentile(values: list[int], q: float) -> float:
    """Linear interpolation, as PostgreSQL's percentile_cont."""
    position = q * (len(values) - 1)
    low, high = math.floor(position), math.ceil(position)
    return values[low] + (values[high] - values[low]) * (position - low)


def _violations(session: Session, p: Period, top_n: int) -> dict[str, Any]:
    v = t.ViolationRow
    within = and_(v.detected_at >= p.start, v.detected_at < p.end)
    total = session.scalar(select(func.count()).where(within))
    by_policy = session.execute(
        select(v.policy_name, v.policy_type, func.count(), func.count(v.account_id.distinct()))
        .where(within).group_by(v.policy_name, v.policy_type)
        .order_by(func.count().desc(), v.policy_name)).all()
    by_account = session.execute(
        select(v.account_id, func.count(), func.count(v.policy_name.distinct()))
        .where(within).group_by(v.account_id)
        .order_by(func.count().desc(), v.account_id).limit(top_n)).all()
    by_type = session.execute(select(v.policy_type, func.count()).where(within)
                              .group_by(v.policy_type)).all()
    return {
        "total": int(total or 0),
        "by_type": {k: int(n) for k, n in by_type},
        "by_policy": [{"policy": name, "type": kind, "count": int(n), "accounts": int(a)}
                      for name, kind, n, a in by_policy],
        "top_accounts": [{"account_id": acc, "count": int(n), "policies": int(k)}
                         for acc, n, k in by_account],
    }


def _liquidations(session: Session, p: Period) -> dict[str, Any]:
    lq = t.LiquidationRow
    within = and_(lq.started_at >= p.start, lq.started_at < p.end)
    by_status = session.execute(select(lq.status, func.count()).where(within)
                                .group_by(lq.status)).all()
    rows = session.scalars(select(lq).where(within).order_by(lq.started_at, lq.episode_id)
                           .limit(LIST_LIMIT)).all()
    return {
        "total": sum(int(n) for _, n in by_status),
        "by_status": {s: int(n) for s, n in by_status},
        "realized_pnl": _num(sum((r.realized_pnl or Decimal(0)) for r in rows)),
        "items": [{"episode_id": r.episode_id, "account_id": r.account_id, "reason": r.reason,
                   "status": r.status, "equity_before": _num(r.equity_before),
                   "maintenance_before": _num(r.maintenance_before),
                   "equity_after": _num(r.equity_after), "realized_pnl": _num(r.realized_pnl),
                   "positions_closed": len(r.positions_closed or []),
                   "started_at": _iso(r.started_at), "completed_at": _iso(r.completed_at)}
                  for r in rows],
    }


def _emergency_stops(session: Session, p: Period) -> dict[str, Any]:
    es = t.EmergencyStopRow
    # A stop belongs to the period when it was triggered or resolved in it.
    touched = (and_(es.triggered_at >= p.start, es.triggered_at < p.end)
               | and_(es.resolved_at >= p.start, es.resolved_at < p.end))
    rows = session.scalars(select(es).where(touched).order_by(es.triggered_at)
                           .limit(LIST_LIMIT)).all()
    triggered = [r for r in rows if p.start <= _aware(r.triggered_at) < p.end]
    return {
        "triggered": len(triggered),
        "global": sum(1 for r in triggered if r.scope == "global"),
        "items": [{"stop_id": r.stop_id, "scope": r.scope, "account_id": r.account_id,
                   "reason": r.reason, "triggered_by": r.triggered_by,
                   "triggered_at": _iso(r.triggered_at), "status": r.status,
                   "resolved_by": r.resolved_by, "resolved_at": _iso(r.resolved_at),
                   "resolve_reason": r.resolve_reason,
                   "positions_closed": r.positions_closed, "completed": r.completed}
                  for r in rows],
    }


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _operator_actions(session: Session, p: Period) -> dict[str, Any]:
    oa = t.OperatorActionRow
    within = and_(oa.acted_at >= p.start, oa.acted_at < p.end)
    counts = session.execute(select(oa.action, oa.allowed, func.count()).where(within)
                             .group_by(oa.action, oa.allowed)).all()
    rows = session.scalars(select(oa).where(within).order_by(oa.acted_at, oa.id)
                           .limit(LIST_LIMIT)).all()
    return {
        "total": sum(int(n) for *_, n in counts),
        "refused": sum(int(n) for _, allowed, n in counts if not allowed),
        "by_action": _fold(counts),
        "items": [{"action": r.action, "operator": r.operator, "allowed": r.allowed,
                   "reason": r.reason, "acted_at": _iso(r.acted_at)} for r in rows],
    }


def _fold(counts: Iterable[tuple[str, bool, int]]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for action, allowed, n in counts:
        entry = out.setdefault(action, {"allowed": 0, "refused": 0})
        entry["allowed" if allowed else "refused"] += int(n)
    return dict(sorted(out.items()))


def _alerts(session: Session, p: Period) -> dict[str, Any]:
    al = t.AlertRow
    within = and_(al.created_at >= p.start, al.created_at < p.end)
    by_level = session.execute(select(al.level, func.count()).where(within)
                               .group_by(al.level)).all()
    return {"total": sum(int(n) for _, n in by_level),
            "by_level": {lvl: int(n) for lvl, n in by_level}}


def _dead_letters(session: Session, p: Period) -> dict[str, Any]:
    dl = t.DeadLetterRow
    within = and_(dl.created_at >= p.start, dl.created_at < p.end)
    by_task = session.execute(select(dl.task_name, dl.status, func.count()).where(within)
                              .group_by(dl.task_name, dl.status)).all()
    rows = session.scalars(select(dl).where(within).order_by(dl.created_at, dl.id)
                           .limit(LIST_LIMIT)).all()
    tasks: dict[str, dict[str, int]] = {}
    for name, status, n in by_task:
        tasks.setdefault(name, {})[status] = int(n)
    return {
        "total": sum(int(n) for *_, n in by_task),
        "by_task": dict(sorted(tasks.items())),
        "items": [{"dead_letter_id": r.dead_letter_id, "task": r.task_name,
                   "status": r.status, "attempts": r.attempts,
                   "error": (r.error or "")[:300], "created_at": _iso(r.created_at),
                   "replayed_by": r.replayed_by} for r in rows],
    }


# -- CSV --

def to_csv(report: dict[str, Any]) -> str:
    """Long form, ``section,item,field,value``: every figure on its own line."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["section", "item", "field", "value"])
    w.writerow(["report", report["period"], "start", report["start"]])
    w.writerow(["report", report["period"], "end", report["end"]])
    oc = report["order_checks"]
    for key in ("total", "approved", "rejected", "approval_rate"):
        w.writerow(["order_checks", "all", key, oc[key]])
    for reason, n in oc["by_reason"].items():
        w.writerow(["rejections", reason, "count", n])
    for key, value in oc["latency"].items():
        w.writerow(["latency", "check_order", key, value])
    for point in oc["series"]:
        w.writerow(["checks_over_time", point["start"], "approved", point["approved"]])
        w.writerow(["checks_over_time", point["start"], "rejected", point["rejected"]])
    vi = report["violations"]
    w.writerow(["violations", "all", "total", vi["total"]])
    for row in vi["by_policy"]:
        w.writerow(["violations_by_policy", row["policy"], "count", row["count"]])
        w.writerow(["violations_by_policy", row["policy"], "accounts", row["accounts"]])
    for row in vi["top_accounts"]:
        w.writerow(["violations_by_account", row["account_id"], "count", row["count"]])
    lq = report["liquidations"]
    w.writerow(["liquidations", "all", "total", lq["total"]])
    for status, n in lq["by_status"].items():
        w.writerow(["liquidations", status, "count", n])
    for item in lq["items"]:
        for key in ("account_id", "status", "reason", "equity_before", "equity_after",
                    "realized_pnl", "started_at"):
            w.writerow(["liquidation", item["episode_id"], key, item[key]])
    es = report["emergency_stops"]
    w.writerow(["emergency_stops", "all", "triggered", es["triggered"]])
    for item in es["items"]:
        for key in ("scope", "account_id", "reason", "triggered_by", "triggered_at", "status",
                    "resolved_by", "resolved_at", "resolve_reason"):
            w.writerow(["emergency_stop", item["stop_id"], key, item[key]])
    oa = report["operator_actions"]
    w.writerow(["operator_actions", "all", "total", oa["total"]])
    w.writerow(["operator_actions", "all", "refused", oa["refused"]])
    for action, counts in oa["by_action"].items():
        for key, n in counts.items():
            w.writerow(["operator_actions", action, key, n])
    for level, n in report["alerts"]["by_level"].items():
        w.writerow(["alerts", level, "count", n])
    dl = report["dead_letters"]
    w.writerow(["dead_letters", "all", "total", dl["total"]])
    for task, counts in dl["by_task"].items():
        for status, n in counts.items():
            w.writerow(["dead_letters", task, status, n])
    return out.getvalue()


# -- HTML AND ITS CHARTS --

PALETTE = {"approved": "#2f9e44", "rejected": "#e03131", "bar": "#1c7ed6",
           "grid": "#dee2e6", "text": "#343a40", "muted": "#868e96"}


def svg_bars(items: list[tuple[str, float]], unit: str = "", width: int = 560,
             colour: str = PALETTE["bar"]) -> str:
    """A horizontal bar chart (label, value), largest first as given."""
    if not items:
        return '<p class="none">none in this period</p>'
    bar_h, gap, label_w = 22, 8, 190
    height = len(items) * (bar_h + gap) + gap
    top = max(v for _, v in items) or 1
    parts = [f'<svg role="img" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
             f'xmlns="http://www.w3.org/2000/svg" font-family="sans-serif" font-size="12">']
    for i, (label, value) in enumerate(items):
        y = gap + i * (bar_h + gap)
        w = max((width - label_w - 70) * value / top, 1 if value else 0)
        shown = label if len(label) <= 28 else label[:27] + "…"
        parts.append(f'<text x="{label_w - 6}" y="{y + 15}" text-anchor="end" '
                     f'fill="{PALETTE["text"]}"><title>{escape(label)}</title>{escape(shown)}</text>')
        parts.append(f'<rect x="{label_w}" y="{y}" width="{w:.1f}" height="{bar_h}" rx="2" '
                     f'fill="{colour}"/>')
        parts.append(f'<text x="{label_w + w + 6:.1f}" y="{y + 15}" fill="{PALETTE["text"]}">'
                     f'{_fmt(value)}{escape(unit)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def svg_stacked_series(series: list[dict[str, Any]], width: int = 900, height: int = 220) -> str:
    """Approved and rejected checks per time slot, stacked bars with a y axis."""
    if not series or not any(s["approved"] + s["rejected"] for s in series):
        return '<p class="none">no order checks in this period</p>'
    left, bottom, top_pad = 50, 30, 10
    plot_w, plot_h = width - left - 10, height - bottom - top_pad
    peak = max(s["approved"] + s["rejected"] for s in series)
    scale = _nice(peak)
    slot_w = plot_w / len(series)
    parts = [f'<svg role="img" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
             f'xmlns="http://www.w3.org/2000/svg" font-family="sans-serif" font-size="11">']
    for k in range(5):
        value = scale * k / 4
        y = top_pad + plot_h - plot_h * k / 4
        parts.append(f'<line x1="{left}" x2="{width - 10}" y1="{y:.1f}" y2="{y:.1f}" '
                     f'stroke="{PALETTE["grid"]}"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" '
                     f'fill="{PALETTE["muted"]}">{value:,g}</text>')
    label_every = max(1, len(series) // 8)
    for i, s in enumerate(series):
        x = left + i * slot_w
        bar_w = max(slot_w * 0.8, 1)
        base = top_pad + plot_h
        for key in ("approved", "rejected"):
            h = plot_h * s[key] / scale
            if h:
                base -= h
                parts.append(f'<rect x="{x + slot_w * 0.1:.1f}" y="{base:.1f}" width="{bar_w:.1f}" '
                             f'height="{h:.1f}" fill="{PALETTE[key]}"><title>{s["start"]}: '
                             f'{s[key]} {key}</title></rect>')
        if i % label_every == 0:
            parts.append(f'<text x="{x + slot_w / 2:.1f}" y="{height - 10}" text-anchor="middle" '
                         f'fill="{PALETTE["muted"]}">{s["start"][11:16]}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _nice(peak: float) -> float:
    """The smallest 1, 2 or 5 times a power of ten at or above ``peak``."""
    if peak <= 0:
        return 1
    power = 10 ** math.floor(math.log10(peak))
    for step in (1, 2, 5, 10):
        if step * power >= peak:
            return step * power
    return 10 * power


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value.is_integer():
            return f"{int(value):,}"
        return f"{value:,.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> str:
    if not rows:
        return '<p class="none">none in this period</p>'
    head = "".join(f"<th>{escape(title)}</th>" for _, title in columns)
    body = "".join("<tr>" + "".join(f"<td>{escape(_fmt(r.get(k)))}</td>" for k, _ in columns)
                   + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


STYLE = """
body{font-family:-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;color:#212529;
margin:0;background:#f8f9fa}
main{max-width:980px;margin:0 auto;padding:24px 32px;background:#fff}
h1{font-size:24px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;
border-bottom:2px solid #e9ecef;padding-bottom:4px}
.sub{color:#868e96;margin:0 0 16px}
.cards{display:flex;flex-wrap:wrap;gap:12px}
.card{flex:1 1 140px;border:1px solid #dee2e6;border-radius:6px;padding:10px 12px}
.card b{display:block;font-size:22px}.card span{color:#868e96;font-size:12px}
.card.alert{border-color:#e03131}.card.alert b{color:#e03131}
table{border-collapse:collapse;width:100%;font-size:13px;margin:6px 0}
th,td{border-bottom:1px solid #e9ecef;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f1f3f5}.none{color:#868e96;font-style:italic}
.legend span{display:inline-block;width:10px;height:10px;margin:0 4px 0 12px}
footer{color:#868e96;font-size:12px;margin-top:32px}
@media print{body{background:#fff}main{padding:0}}
"""


def to_html(report: dict[str, Any]) -> str:
    oc, vi, lq = report["order_checks"], report["violations"], report["liquidations"]
    es, oa, dl = report["emergency_stops"], report["operator_actions"], report["dead_letters"]
    al = report["alerts"]
    lat = oc["latency"]

    def card(label: str, value: Any, alert: bool = False) -> str:
        return (f'<div class="card{" alert" if alert else ""}"><b>{escape(_fmt(value))}</b>'
                f"<span>{escape(label)}</span></div>")

    approval = "–" if oc["approval_rate"] is None else f"{oc['approval_rate'] * 100:.1f} %"
    cards = "".join([
        card("order checks", oc["total"]), card("approved", approval),
        card("p99 decision time", f"{lat['p99_us'] / 1000:.2f} ms" if lat else "–"),
        card("violations", vi["total"]), card("liquidations", lq["total"]),
        card("emergency stops", es["triggered"], alert=es["triggered"] > 0),
        card("dead letters", dl["total"], alert=dl["total"] > 0),
    ])
    latency_bars = [(k.replace("_us", ""), v / 1000) for k, v in lat.items()
                    if k.startswith("p") or k == "max_us"]
    width = oc["bucket_seconds"]
    slot = f"{width // 60} min" if width < 3600 else f"{width // 3600} h"
    sections = [
        f'<h1>Compliance report: {escape(report["period"])}</h1>'
        f'<p class="sub">{escape(report["start"])} to {escape(report["end"])} (UTC, end '
        f'excluded) · generated {escape(report["generated_at"])}</p>'
        f'<div class="cards">{cards}</div>',
        f"<h2>Order checks over time</h2><p class=\"sub\">per {slot}"
        f'<span class="legend"><span style="background:{PALETTE["approved"]}"></span>approved'
        f'<span style="background:{PALETTE["rejected"]}"></span>rejected</span></p>'
        + svg_stacked_series(oc["series"]),
        "<h2>Rejections by reason</h2>"
        + svg_bars(list(oc["by_reason"].items()), colour=PALETTE["rejected"]),
        "<h2>Decision latency inside the worker</h2>"
        + svg_bars(latency_bars, unit=" ms")
        + (f'<p class="sub">mean {lat["mean_us"] / 1000:.3f} ms over {oc["total"]:,} checks</p>'
           if lat else ""),
        "<h2>Violations by policy</h2>"
        + svg_bars([(f'{r["policy"]} ({r["type"]})', r["count"]) for r in vi["by_policy"]])
        + _table(vi["by_policy"], [("policy", "policy"), ("type", "type"),
                                   ("count", "violations"), ("accounts", "accounts")]),
        f"<h2>Accounts with most violations (top {len(vi['top_accounts'])})</h2>"
        + _table(vi["top_accounts"], [("account_id", "account"), ("count", "violations"),
                                      ("policies", "policies")]),
        "<h2>Liquidations</h2>"
        + _table([{"status": s, "count": n} for s, n in lq["by_status"].items()],
                 [("status", "status"), ("count", "episodes")])
        + _table(lq["items"], [("started_at", "started"), ("account_id", "account"),
                               ("status", "status"), ("reason", "reason"),
                               ("equity_before", "equity before"),
                               ("equity_after", "equity after"),
                               ("realized_pnl", "realised PnL")]),
        "<h2>Emergency stops</h2>"
        + _table(es["items"], [("triggered_at", "when"), ("scope", "scope"),
                               ("account_id", "account"), ("triggered_by", "by"),
                               ("reason", "why"), ("status", "status"),
                               ("resolved_by", "resumed by"), ("resolved_at", "resumed"),
                               ("resolve_reason", "resume reason")]),
        f"<h2>Operator actions ({oa['total']}, {oa['refused']} refused)</h2>"
        + _table(oa["items"], [("acted_at", "when"), ("operator", "operator"),
                               ("action", "action"), ("allowed", "allowed"),
                               ("reason", "reason")]),
        "<h2>Alerts</h2>"
        + _table([{"level": k, "count": n} for k, n in al["by_level"].items()],
                 [("level", "level"), ("count", "alerts")]),
        "<h2>Dead letters</h2>"
        + _table(dl["items"], [("created_at", "when"), ("task", "task"), ("status", "status"),
                               ("attempts", "attempts"), ("error", "error"),
                               ("dead_letter_id", "id")]),
        '<footer>From the system of record (PostgreSQL). The same figures: the JSON and CSV '
        "files beside this one, and the compliance_reports table.</footer>",
    ]
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>Risk compliance report {escape(report['start'])}</title>"
            f"<style>{STYLE}</style></head><body><main>" + "".join(sections)
            + "</main></body></html>\n")


# -- BUILD AND STORE --

def build_report(sessions: sessionmaker[Session], report_dir: str, period: Any,
                 start: Any = None, end: Any = None, now: datetime | None = None,
                 top_n: int = TOP_N) -> dict[str, Any]:
    """Collect, write the three files and store the row. Returns a short summary with
    the row id and the file paths."""
    p = resolve_period(period, start, end, now)
    with sessions() as session:
        report = collect(session, p, top_n)
    html, text = to_html(report), to_csv(report)
    folder = Path(report_dir) / p.name
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for ext, body in (("json", orjson.dumps(report, option=orjson.OPT_INDENT_2)),
                      ("csv", text.encode()), ("html", html.encode())):
        path = folder / f"{p.slug}.{ext}"
        tmp = path.with_suffix(f".{ext}.tmp")
        tmp.write_bytes(body)
        os.replace(tmp, path)  # a reader never sees half a file
        paths[ext] = str(path.resolve())
    from risk_tasks.journal import upsert

    with sessions() as session, session.begin():
        upsert(session, t.ComplianceReportRow, [{
            "period": p.name, "period_start": p.start, "period_end": p.end,
            "summary": report, "html": html, "csv": text, "paths": paths,
            "created_at": datetime.now(timezone.utc),
        }], ["period", "period_start", "period_end"],
            ["summary", "html", "csv", "paths", "created_at"])
        row_id = session.scalar(select(t.ComplianceReportRow.id).where(
            t.ComplianceReportRow.period == p.name,
            t.ComplianceReportRow.period_start == p.start,
            t.ComplianceReportRow.period_end == p.end))
    oc = report["order_checks"]
    return {
        "success": True, "report_id": row_id, "period": p.name, "start": report["start"],
        "end": report["end"], "paths": paths,
        "order_checks": oc["total"], "rejected": oc["rejected"],
        "p99_us": oc["latency"].get("p99_us"), "violations": report["violations"]["total"],
        "liquidations": report["liquidations"]["total"],
        "emergency_stops": report["emergency_stops"]["triggered"],
        "operator_actions": report["operator_actions"]["total"],
        "dead_letters": report["dead_letters"]["total"],
    }
