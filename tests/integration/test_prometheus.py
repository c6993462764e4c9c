"""deploy/prometheus/: the configuration and rules as Prometheus itself reads them, the
rules' own unit tests, and a real Prometheus scraping a live worker.

Uses Debian's ``prometheus`` package (``prometheus`` and ``promtool``), which
scripts/lib.sh installs; the module is skipped, saying so, only where it is absent.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
import requests
import yaml

from tests.integration.helpers import wait_until
from tests.support.services import free_port

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("promtool") is None or shutil.which("prometheus") is None,
                       reason="Debian's prometheus package (prometheus, promtool) is not "
                              "installed: apt-get install prometheus"),
]

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
RULES = ROOT / "deploy" / "prometheus" / "rules.yml"
RULE_TESTS = ROOT / "tests" / "prometheus" / "rules_test.yml"
JOBS = {"worker-pretrade", "worker-monitor", "worker-actions", "worker-ops", "beat", "flower"}


def promtool(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(["promtool", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60)


def mounted(tmp_path: Path) -> Path:
    """The configuration as the container sees it: /etc/prometheus/ is this folder."""
    folder = tmp_path / "etc-prometheus"
    shutil.copytree(CONFIG.parent, folder)
    config = folder / CONFIG.name
    config.write_text(config.read_text().replace("/etc/prometheus/", f"{folder}/"))
    return config


def test_promtool_accepts_the_configuration_and_its_rule_file(tmp_path):
    assert yaml.safe_load(CONFIG.read_text())["rule_files"] == ["/etc/prometheus/rules.yml"]
    result = promtool("check", "config", str(mounted(tmp_path)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout + result.stderr


def test_promtool_accepts_the_rules():
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_fires_in_its_promtool_unit_test():
    result = promtool("test", "rules", RULE_TESTS.name, cwd=RULE_TESTS.parent)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_component_is_scraped_and_every_required_alert_exists():
    config = yaml.safe_load(CONFIG.read_text())
    assert JOBS <= {job["job_name"] for job in config["scrape_configs"]}
    alerts = {r["alert"]: r["expr"] for g in yaml.safe_load(RULES.read_text())["groups"]
              for r in g["rules"] if "alert" in r}
    for name in ("RiskEmergencyStopActive", "RiskPretradeLatencyHigh", "RiskRejectionRateHigh",
                 "RiskMonitorTicksSkipped", "RiskMonitorTickLagging", "RiskDeadLettersGrowing",
                 "RiskAuditBacklogGrowing", "RiskWorkerDown", "RiskRedisDown"):
        assert name in alerts, name
    assert "up{" in alerts["RiskWorkerDown"] and "risk_redis_up" in alerts["RiskRedisDown"]


# -- A REAL PROMETHEUS --

def run_prometheus(tmp_path: Path, target: str) -> tuple[subprocess.Popen, str]:
    """Prometheus on a free port of 127.0.0.1 with the repository's rules and global
    settings, scraping ``target`` as the pretrade job every second."""
    config = yaml.safe_load(CONFIG.read_text())
    config["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
    config["rule_files"] = [str(RULES)]
    config["scrape_configs"] = [{"job_name": "worker-pretrade",
                                 "static_configs": [{"targets": [target]}]}]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    port = free_port()
    log = open(tmp_path / "prometheus.log", "ab")
    process = subprocess.Popen(
        ["prometheus", f"--config.file={path}", f"--storage.tsdb.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--web.enable-lifecycle"],
        stdout=log, stderr=log, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: ready(base), timeout=60, interval=0.2, message="Prometheus ready")
    except BaseException:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)
        raise
    return process, base


def ready(base: str) -> bool:
    """Prometheus answers 503 "Service Unavailable" until its storage is open."""
    try:
        return requests.get(f"{base}/-/ready", timeout=5).status_code == 200
    except requests.ConnectionError:
        return False


def query(base: str, expr: str) -> list[dict]:
    try:
        response = requests.get(f"{base}/api/v1/query", params={"query": expr}, timeout=5)
    except requests.ConnectionError:
        return []
    if response.status_code != 200:
        return []
    body = response.json()
    return body.get("data", {}).get("result", []) if body.get("status") == "success" else []


def test_prometheus_scrapes_a_live_worker_and_evaluates_every_rule(world, private_broker,
                                                                  tmp_path):
    # given: a pretrade worker with its endpoint, which has decided one check
    world.symbol("BTC")
    world.prices({"BTC": 100})
    world.account("A", 1_000_000)
    metrics_port = free_port()
    private_broker.start_worker(queues="pretrade,control", pool="prefork", concurrency=1,
                                env={"RISK_METRICS_PORT": str(metrics_port),
                                     "RISK_METRICS_HOST": "127.0.0.1"})
    sent = private_broker.app.send_task("risk.check_order", [world.order(account_id="A")])
    assert sent.get(timeout=20)["approved"] is True
    # when
    process, base = run_prometheus(tmp_path, f"127.0.0.1:{metrics_port}")
    try:
        # then: the worker is up and its engine metrics are in Prometheus
        approved = wait_until(lambda: query(base, 'risk_order_checks_total{result="approved"}'),
                              timeout=60, interval=0.5, message="a scraped risk_ metric")
        assert float(approved[0]["value"][1]) == 1
        assert approved[0]["metric"]["job"] == "worker-pretrade"
        assert float(query(base, 'up{job="worker-pretrade"}')[0]["value"][1]) == 1
        assert float(query(base, "risk_redis_up")[0]["value"][1]) == 1
        # and: every rule of rules.yml has been evaluated without error
        def evaluated() -> list[dict] | None:
            groups = requests.get(f"{base}/api/v1/rules", timeout=5).json()["data"]["groups"]
            rules = [r for g in groups for r in g["rules"]]
            done = all(not r["lastEvaluation"].startswith("0001") for r in rules)
            return rules if rules and done else None

        rules = wait_until(evaluated, timeout=30, interval=0.5, message="rules evaluated")
        assert len(rules) == len([r for g in yaml.safe_load(RULES.read_text())["groups"]
                                  for r in g["rules"]])
        assert all(r["health"] == "ok" for r in rules), [r for r in rules if r["health"] != "ok"]
        firing = {r["name"] for r in rules if r.get("state") == "firing"}
        assert "RiskEmergencyStopActive" not in firing and "RiskRedisDown" not in firing
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)
