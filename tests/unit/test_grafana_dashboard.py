"""deploy/grafana/: every query of the dashboard names metrics that exist, the provisioning
points at the data source the panels use, and the panels cover what operators need."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "risk.json"
RULES = ROOT / "deploy" / "prometheus" / "rules.yml"

# Series every Prometheus has, beside the engine's own.
STANDARD = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or",
                "unless", "bool", "offset", "inf", "nan", "le"}


def engine_series() -> set[str]:
    """Every series name risk_tasks/metrics.py exposes, with the client's suffixes."""
    from prometheus_client.metrics import MetricWrapperBase

    from risk_tasks import metrics

    names: set[str] = set()
    for value in vars(metrics).values():
        if not isinstance(value, MetricWrapperBase):
            continue
        name, kind = value._name, value._type
        if kind == "counter":
            names |= {f"{name}_total", f"{name}_created"}
        elif kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_count", f"{name}_sum", f"{name}_created"}
        else:
            names.add(name)
    return names


def recorded_series() -> set[str]:
    return {r["record"] for g in yaml.safe_load(RULES.read_text())["groups"]
            for r in g["rules"] if "record" in r}


def metric_names(expr: str) -> set[str]:
    """The series names a PromQL expression reads (functions, keywords, label names,
    strings, durations and numbers left out)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)                  # strings
    text = re.sub(r"\{[^}]*\}", "", text)                             # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)                            # ranges
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        token = match.group(0)
        rest = text[match.end():].lstrip()
        if rest.startswith("(") or token.lower() in PROMQL_WORDS:
            continue  # a function call or a keyword
        names.add(token)
    return names


def panels() -> list[dict]:
    return [p for p in json.loads(DASHBOARD.read_text())["panels"] if p["type"] != "row"]


def test_the_parser_finds_the_metrics_of_a_query():
    expr = ('histogram_quantile(0.99, sum by (le) (rate(risk_x_bucket{job=~"a|b"}[5m]))) '
            "/ ignoring(le) sum without (instance) (up) > bool 0.5")
    assert metric_names(expr) == {"risk_x_bucket", "up"}


def test_every_panel_query_names_metrics_that_exist():
    known = engine_series() | recorded_series() | STANDARD
    assert "risk_order_checks_total" in known and "risk_order_check_duration_seconds_bucket" in known
    for p in panels():
        assert p["targets"], p["title"]
        for t in p["targets"]:
            names = metric_names(t["expr"])
            assert names, (p["title"], t["expr"])
            assert names <= known, (p["title"], sorted(names - known))


def test_the_dashboard_shows_what_operators_watch():
    queries = " ".join(t["expr"] for p in panels() for t in p["targets"])
    for metric in ("risk_order_check_duration_seconds_bucket", "risk_order_checks_total",
                   "risk_orders_rejected_total", "risk_monitor_tick_duration_seconds_bucket",
                   "risk_monitor_tick_lag_seconds_bucket", "risk_monitor_ticks_skipped_total",
                   "risk_liquidations_total", "risk_violations_total",
                   "risk_alerts_published_total", "risk_dead_letters_total",
                   "risk_audit_backlog", "risk_emergency_stop_active"):
        assert metric in queries, metric
    assert "histogram_quantile(0.99" in queries


def test_panels_use_the_provisioned_data_source_and_do_not_overlap():
    source = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml")
                            .read_text())["datasources"][0]
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "risk.yml")
                              .read_text())["providers"][0]
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
    cells: set[tuple[int, int]] = set()
    for p in json.loads(DASHBOARD.read_text())["panels"]:
        if p["type"] != "row":
            assert p["datasource"]["uid"] == source["uid"]
            assert all(t["datasource"]["uid"] == source["uid"] for t in p["targets"])
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"])
                for y in range(g["y"], g["y"] + g["h"])}
        assert not mine & cells, p["title"]
        cells |= mine


def test_the_committed_json_is_what_the_generator_writes():
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_dashboard", GRAFANA / "make_dashboard.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert json.loads(DASHBOARD.read_text()) == module.dashboard()


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_every_panel_query_is_valid_promql(tmp_path):
    # promtool parses PromQL in rule files: one recording rule per panel query.
    rules = [{"record": f"panel:{i}", "expr": t["expr"].replace("$__rate_interval", "1m")}
             for i, t in enumerate(t for p in panels() for t in p["targets"])]
    path = tmp_path / "panel-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "panels", "rules": rules}]}))
    result = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_and_recording_rule_names_metrics_that_exist():
    known = engine_series() | recorded_series() | STANDARD
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            names = metric_names(rule["expr"])
            assert names and names <= known, (rule.get("alert") or rule["record"],
                                              sorted(names - known))
