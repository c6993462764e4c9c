"""Writes deploy/grafana/dashboards/risk.json, the Grafana dashboard of the risk engine.

The JSON is generated so that every panel has the same shape and the queries sit in one
readable list; run ``python deploy/grafana/make_dashboard.py`` after editing. Metric
names are those of risk_tasks/metrics.py (a unit test checks every query against it).
"""

from __future__ import annotations

import json
from pathlib import Path

DATASOURCE = {"type": "prometheus", "uid": "prometheus"}
RATE = "$__rate_interval"
OUT = Path(__file__).parent / "dashboards" / "risk.json"


def target(expr: str, legend: str, ref: str) -> dict:
    return {"datasource": DATASOURCE, "expr": expr, "legendFormat": legend, "refId": ref,
            "range": True}


def panel(title: str, queries: list[tuple[str, str]], x: int, y: int, w: int = 12, h: int = 8,
          unit: str = "short", kind: str = "timeseries", description: str = "",
          thresholds: list[tuple[float | None, str]] | None = None,
          mappings: list[dict] | None = None) -> dict:
    steps = [{"color": c, "value": v} for v, c in (thresholds or [(None, "green")])]
    out = {
        "type": kind, "title": title, "description": description, "datasource": DATASOURCE,
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "targets": [target(q, legend, chr(ord("A") + i)) for i, (q, legend) in enumerate(queries)],
        "fieldConfig": {"defaults": {"unit": unit, "mappings": mappings or [],
                                     "thresholds": {"mode": "absolute", "steps": steps}},
                        "overrides": []},
        "options": {},
    }
    if kind == "timeseries":
        out["fieldConfig"]["defaults"]["custom"] = {"drawStyle": "line", "lineWidth": 1,
                                                    "fillOpacity": 10, "showPoints": "never"}
        out["options"] = {"legend": {"displayMode": "table", "placement": "bottom",
                                     "calcs": ["lastNotNull", "max"]},
                          "tooltip": {"mode": "multi", "sort": "desc"}}
    elif kind == "stat":
        out["options"] = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "",
                                            "values": False},
                          "colorMode": "background", "graphMode": "none", "textMode": "value"}
    return out


def row(title: str, y: int) -> dict:
    return {"type": "row", "title": title, "collapsed": False, "panels": [],
            "gridPos": {"x": 0, "y": y, "w": 24, "h": 1}}


def quantiles(metric: str, qs: tuple[float, ...]) -> list[tuple[str, str]]:
    return [(f"histogram_quantile({q}, sum by (le) (rate({metric}_bucket[{RATE}])))",
             f"p{q * 100:g}") for q in qs]


def dashboard() -> dict:
    on_off = [{"type": "value", "options": {"0": {"text": "TRADING", "color": "green"},
                                            "1": {"text": "HALTED", "color": "red"}}}]
    up_down = [{"type": "value", "options": {"0": {"text": "DOWN", "color": "red"},
                                             "1": {"text": "UP", "color": "green"}}}]
    panels = [
        row("State", 0),
        panel("Emergency stop", [("max(risk_emergency_stop_active)", "stop")], 0, 1, 6, 4,
              kind="stat", mappings=on_off, thresholds=[(None, "green"), (1, "red")],
              description="HALTED while a global emergency stop is active (riskctl status)."),
        panel("Redis", [("min(risk_redis_up)", "redis")], 6, 1, 6, 4, kind="stat",
              mappings=up_down, thresholds=[(None, "red"), (1, "green")],
              description="Whether every worker host reaches the hot-state Redis."),
        panel("Worker hosts up", [('sum(up{job=~"worker-.*"})', "up")], 12, 1, 6, 4,
              kind="stat", thresholds=[(None, "red"), (1, "green")]),
        panel("Accounts evaluated per tick", [("max(risk_active_accounts)", "accounts")],
              18, 1, 6, 4, kind="stat"),

        row("Pre-trade", 5),
        panel("check_order latency (in the worker)",
              quantiles("risk_order_check_duration_seconds", (0.5, 0.99, 0.999)), 0, 6,
              unit="s", thresholds=[(None, "green"), (0.01, "red")],
              description="Percentiles of the decision time inside the pretrade workers; "
                          "the alert fires above 10 ms at p99."),
        panel("Checks per second by result",
              [(f"sum by (result) (rate(risk_order_checks_total[{RATE}]))", "{{result}}"),
               (f"sum(rate(risk_order_replays_total[{RATE}]))", "replayed order id")],
              12, 6, unit="reqps"),
        panel("Rejections by reason",
              [(f"sum by (reason) (rate(risk_orders_rejected_total[{RATE}]))", "{{reason}}")],
              0, 14, unit="reqps"),
        panel("Rejected share",
              [(f'sum(rate(risk_order_checks_total{{result="rejected"}}[{RATE}])) / '
                f"sum(rate(risk_order_checks_total[{RATE}]))", "rejected")],
              12, 14, unit="percentunit", thresholds=[(None, "green"), (0.5, "red")]),

        row("Monitor", 22),
        panel("Tick time and lag",
              [(f"histogram_quantile(0.5, sum by (le) (rate(risk_monitor_tick_duration_seconds_bucket[{RATE}])))", "tick p50"),
               (f"histogram_quantile(0.99, sum by (le) (rate(risk_monitor_tick_duration_seconds_bucket[{RATE}])))", "tick p99"),
               (f"histogram_quantile(0.99, sum by (le) (rate(risk_monitor_tick_lag_seconds_bucket[{RATE}])))", "lag p99"),
               (f"histogram_quantile(0.99, sum by (le) (rate(risk_shard_duration_seconds_bucket[{RATE}])))", "shard p99")],
              0, 23, unit="s", thresholds=[(None, "green"), (1, "red")],
              description="Tick: start to aggregate done. Lag: the tick's second to done."),
        panel("Ticks by outcome, and skipped",
              [("sum by (outcome) (increase(risk_monitor_ticks_total[1m]))", "{{outcome}}"),
               ("sum by (reason) (increase(risk_monitor_ticks_skipped_total[1m]))",
                "skipped: {{reason}}")],
              12, 23, description="Per minute; about 60 completed ticks is healthy."),

        row("Actions", 31),
        panel("Violations by policy",
              [(f"sum by (policy_type, policy) (rate(risk_violations_total[{RATE}]))",
                "{{policy_type}}: {{policy}}")], 0, 32, unit="cps"),
        panel("Liquidations by status",
              [("sum by (status) (increase(risk_liquidations_total[5m]))", "{{status}}")],
              12, 32, description="Episodes per 5 minutes."),
        panel("Alerts",
              [("sum by (level) (increase(risk_alerts_published_total[5m]))", "{{level}}"),
               ("sum(increase(risk_alerts_deduplicated_total[5m]))", "deduplicated"),
               ("sum(increase(risk_circuit_breaker_trips_total[5m]))", "circuit breaker trips")],
              0, 40, description="Per 5 minutes."),
        panel("Dead letters by task",
              [("sum by (task) (increase(risk_dead_letters_total[10m]))", "{{task}}")],
              12, 40, thresholds=[(None, "green"), (1, "red")],
              description="New per 10 minutes: `riskctl dlq list`, then `riskctl dlq replay ID`."),
        panel("Audit backlog (journal records not yet in PostgreSQL)",
              [("max by (stream) (risk_audit_backlog)", "{{stream}}")], 0, 48, w=24,
              description="Grows while PostgreSQL is away; nothing is lost. `riskctl drain`."),
    ]
    return {
        "uid": "risk-engine", "title": "Risk engine", "tags": ["risk", "celery"],
        "timezone": "utc", "editable": False, "schemaVersion": 39, "version": 1,
        "refresh": "5s", "time": {"from": "now-30m", "to": "now"},
        "annotations": {"list": []}, "templating": {"list": []},
        "panels": [dict(p, id=i + 1) for i, p in enumerate(panels)],
    }


if __name__ == "__main__":
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(dashboard(), indent=2) + "\n")
    print(f"wrote {OUT}")
