"""The ``/metrics`` and ``/health`` endpoint of a real prefork worker host.

One prefork worker (``-c 2``) on a private broker, with its endpoint on a free port of
127.0.0.1 and a metrics directory of its own. Checks are decided by both pool children;
a scrape of the host must add their counts up, keep the counts of a child that was
killed, and start from zero even when the directory holds files of an earlier run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from risk_tasks.state import keys
from tests.integration.helpers import wait_until
from tests.support.services import free_port

pytestmark = pytest.mark.integration

ACCOUNTS = [f"M{i}" for i in range(5)]  # spread the checks: 50 per account per second


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    """Every sample of ``/metrics`` as ``{(name, sorted labels): value}``."""
    response = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    assert response.status_code == 200, response.text
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def children_of(pid: int) -> list[int]:
    """Pids whose parent is ``pid`` (the prefork pool's processes)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces, so split after the last ')'.
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def stale_file(directory: Path) -> None:
    """A multiprocess file of an 'earlier run' that counted 1000 approvals."""
    code = ("from prometheus_client import Counter; "
            "Counter('risk_order_checks_total', 'x', ['result']).labels('approved').inc(1000)")
    subprocess.run([sys.executable, "-c", code], check=True,
                   env=dict(os.environ, PROMETHEUS_MULTIPROC_DIR=str(directory)))
    assert list(directory.glob("*.db"))


@pytest.fixture()
def host(world, private_broker, tmp_path):  # noqa: ANN001, ANN201
    world.symbol("BTC")
    world.prices({"BTC": 100})
    for account in ACCOUNTS:
        world.account(account, 1_000_000)
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    stale_file(metrics_dir)
    port = free_port()
    worker = private_broker.start_worker(
        queues="pretrade,control", pool="prefork", concurrency=2,
        env={"RISK_METRICS_PORT": str(port), "RISK_METRICS_HOST": "127.0.0.1",
             "RISK_METRICS_DIR": str(metrics_dir)})
    wait_until(lambda: _answers(port), timeout=20, message="the metrics endpoint")
    return worker, port


def _answers(port: int) -> bool:
    try:
        return requests.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200
    except requests.ConnectionError:
        return False


def send_checks(world, app, n: int, start: int) -> tuple[int, int]:  # noqa: ANN001
    """``n`` checks at once, every third for an unknown symbol; (approved, rejected)."""
    orders = []
    for i in range(start, start + n):
        symbol = "NOPE" if i % 3 == 0 else "BTC"
        orders.append(world.order(account_id=ACCOUNTS[i % len(ACCOUNTS)], symbol=symbol,
                                  quantity=0.01))
    pending = [app.send_task("risk.check_order", [o]) for o in orders]
    results = [p.get(timeout=30) for p in pending]
    approved = sum(1 for r in results if r["approved"])
    assert {r["rejection_reason"] for r in results if not r["approved"]} <= {"unknown_symbol"}
    return approved, len(results) - approved


def deciding_pids(world) -> set[str]:  # noqa: ANN001
    return {orjson.loads(f[b"d"])["w"].rsplit(":", 1)[1]
            for _, f in world.rt.redis.xrange(keys.AUDIT_STREAM)}


def test_a_scrape_adds_up_the_counts_of_every_pool_child(world, private_broker, host):
    worker, port = host
    # when: checks flow until both children have decided some
    approved = rejected = 0
    for round_ in range(20):
        a, r = send_checks(world, private_broker.app, 30, round_ * 30)
        approved, rejected = approved + a, rejected + r
        if len(deciding_pids(world)) >= 2:
            break
    assert len(deciding_pids(world)) == 2, "both pool children decided checks"
    # then: the host's totals are the sum over its children, and the earlier run's
    # file was wiped
    samples = scrape(port)
    assert value(samples, "risk_order_checks_total", result="approved") == approved
    assert value(samples, "risk_order_checks_total", result="rejected") == rejected
    assert value(samples, "risk_orders_rejected_total", reason="unknown_symbol") == rejected
    assert value(samples, "risk_order_check_duration_seconds_count") == approved + rejected
    assert value(samples, "risk_order_check_duration_seconds_bucket", le="+Inf") \
        == approved + rejected
    assert value(samples, "risk_order_check_duration_seconds_bucket", le="0.001") >= 0
    # and: the live gauges read from Redis at scrape time
    assert value(samples, "risk_redis_up") == 1
    assert value(samples, "risk_emergency_stop_active") == 0
    assert value(samples, "risk_audit_backlog", stream=keys.AUDIT_STREAM) \
        == world.rt.redis.xlen(keys.AUDIT_STREAM)


def test_a_killed_childs_counts_stay_and_the_replacement_adds_to_them(
        world, private_broker, host):
    worker, port = host
    approved, rejected = send_checks(world, private_broker.app, 20, 0)
    before = scrape(port)
    assert value(before, "risk_order_checks_total", result="approved") == approved
    # when: a pool child is killed outright (no shutdown signal runs in it)
    pool = children_of(worker.process.pid)
    assert len(pool) == 2, pool
    os.kill(pool[0], signal.SIGKILL)
    wait_until(lambda: len(set(children_of(worker.process.pid)) - set(pool)) == 1,
               timeout=30, message="the pool replaces its killed child")
    # then: nothing it counted is lost
    assert value(scrape(port), "risk_order_checks_total", result="approved") == approved
    # and: the new child's work adds to it
    more_approved, more_rejected = send_checks(world, private_broker.app, 20, 100)
    after = scrape(port)
    assert value(after, "risk_order_checks_total", result="approved") == approved + more_approved
    assert value(after, "risk_order_checks_total", result="rejected") == rejected + more_rejected


def test_health_reports_redis_and_an_unknown_path_is_404(host):
    _, port = host
    response = requests.get(f"http://127.0.0.1:{port}/health", timeout=10)
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok" and body["redis"] == "ok" and body["command"] == "worker"
    assert requests.get(f"http://127.0.0.1:{port}/nope", timeout=10).status_code == 404


def test_health_is_503_when_redis_does_not_answer(world, private_broker, tmp_path):
    # given: a host whose state Redis is a closed port (the broker still answers)
    port = free_port()
    private_broker.start_worker(
        queues="control", pool="solo",
        env={"RISK_METRICS_PORT": str(port), "RISK_METRICS_HOST": "127.0.0.1",
             "RISK_REDIS_URL": f"redis://127.0.0.1:{free_port()}/2"})
    # when
    deadline = time.monotonic() + 20
    while True:
        try:
            response = requests.get(f"http://127.0.0.1:{port}/health", timeout=10)
            break
        except requests.ConnectionError:
            assert time.monotonic() < deadline, "the metrics endpoint never answered"
            time.sleep(0.2)
    # then
    assert response.status_code == 503
    assert response.json()["redis"].startswith("error")
    assert value(scrape(port), "risk_redis_up") == 0
