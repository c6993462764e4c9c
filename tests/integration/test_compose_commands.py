"""The exact commands of docker-compose.yml, run as local processes, serve the engine.

There is no Docker engine here, so each service of the compose file that runs engine
code (worker-pretrade, worker-monitor, worker-actions, worker-ops, beat, flower) is
started as a
process on this machine with the service's own command line and environment, as
Compose would interpolate them from an .env written by deploy/make-env.sh. What a
container gives a process for free is translated, and only that:

- the host names ``redis`` and ``postgres`` become the test session's servers (the
  Redis database numbers of the compose URLs are kept for the hot state; broker and
  results go to spare databases of our own, so that only these processes consume);
- each container has its own network, so each process gets its own metrics port (and
  Flower its own port) instead of the compose file's shared number;
- the image's ``/opt/risk/healthcheck.py`` is the repository's ``deploy/healthcheck.py``,
  and the working directory is a fresh one with ``var/`` (the image's ``/app``).

Then: a ``risk.check_order`` is decided by the pretrade process, beat's ticks are swept
by the monitor process, the ops process drains the audit into PostgreSQL, every
process's ``/health`` answers, and the compose file's own health-check commands pass.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from tests.integration.helpers import TASK_TIMEOUT, World, wait_until
from tests.support import compose
from tests.support.services import free_port
from tests.support.workers import PrivateBroker

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ENGINE_PROCESSES = ("worker-pretrade", "worker-monitor", "worker-actions", "worker-ops", "beat")
HOSTNAME = socket.gethostname()


@dataclass
class Process:
    service: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    popen: subprocess.Popen | None = None

    def start(self, cwd: Path) -> "Process":
        out = open(self.log, "ab")
        self.popen = subprocess.Popen(self.argv, env=self.env, cwd=cwd, stdout=out, stderr=out,
                                      start_new_session=True)
        return self

    @property
    def port(self) -> int:
        return int(self.env["RISK_METRICS_PORT"])

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self) -> None:
        if not self.alive():
            return
        os.killpg(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(timeout=10)

    def logs(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""


def hosts() -> dict[str, str]:
    """Container host name -> the test session's server (scheme, credentials, address)."""
    redis_base = os.environ["RISK_REDIS_URL"].rsplit("/", 1)[0]
    return {"redis": redis_base, "postgres": os.environ["RISK_DATABASE_URL"]}


def http_get(url: str, auth: str | None = None, timeout: float = 5.0) -> tuple[int, bytes]:
    request = urllib.request.Request(url)
    if auth:
        import base64

        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):  # noqa: ANN001, ANN201
    """The compose file's engine processes, started once for this module."""
    root = tmp_path_factory.mktemp("compose")
    env_values = compose.make_env(root / ".env")
    config = compose.config(env_values)
    services = config["services"]
    base = os.environ["RISK_BROKER_URL"].rsplit("/", 1)[0]
    broker = PrivateBroker(broker_url=f"{base}/7", backend_url=f"{base}/8")
    # The processes inherit nothing of the session's RISK_* tuning: only what the
    # compose file gives them, translated.
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("RISK_", "FLOWER_"))}
    workdir = root / "app"
    (workdir / "var" / "reports").mkdir(parents=True)
    processes: dict[str, Process] = {}
    try:
        for name in (*ENGINE_PROCESSES, "flower"):
            overrides = {**broker.env, "RISK_METRICS_PORT": str(free_port()),
                         # the state layout is the session's (tests arrange it)
                         "RISK_SHARDS": os.environ["RISK_SHARDS"]}
            env = {**clean, **compose.local_environment(services[name], hosts(), overrides)}
            argv = compose.local_command(compose.command(services[name]))
            if name == "flower":
                env["FLOWER_PORT_LOCAL"] = str(free_port())
                argv = [f"--port={env['FLOWER_PORT_LOCAL']}" if a.startswith("--port=") else a
                        for a in argv]
            processes[name] = Process(name, argv, env, root / f"{name}.log").start(workdir)
        nodes = [f"{compose.WORKER_SERVICES[s]}@{HOSTNAME}" for s in compose.WORKER_SERVICES]

        def all_answer() -> bool:
            for p in processes.values():
                if not p.alive():
                    raise AssertionError(f"{p.service} exited:\n{p.logs()}")
            replies = broker.app.control.ping(destination=nodes, timeout=1.0)
            return {n for r in replies for n in r} == set(nodes)

        wait_until(all_answer, timeout=90, interval=0.2, message="the compose workers answer")
        yield {"broker": broker, "processes": processes, "services": services,
               "workdir": workdir, "env": env_values}
    finally:
        for p in processes.values():
            p.stop()
        broker.close()


@pytest.fixture()
def arranged(deployment, rt) -> World:  # noqa: ANN001
    """Two accounts and a fresh price, on the state the compose processes share, and a
    completed tick of the monitor that saw them."""
    world = World(rt, deployment["broker"].app)
    world.default_policies()
    world.symbol("BTC")
    world.account("rich", "1000000")
    world.account("poor", "100")
    world.prices({"BTC": "50000"})
    since = time.time()
    wait_until(lambda: last_tick(rt, since).get("accounts") == "2", timeout=60,
               message="a tick of beat, swept by worker-monitor, over the 2 accounts")
    return world


def last_tick(rt, since: float) -> dict[str, str]:  # noqa: ANN001
    """The summary of the last aggregated tick, if it finished after ``since``."""
    raw = {k.decode(): v.decode() for k, v in rt.redis.hgetall("risk:monitor:last").items()}
    return raw if float(raw.get("finished_at", 0)) > since else {}


# -- THE PROCESSES SERVE --

def test_worker_pretrade_decides_check_order(deployment, arranged) -> None:  # noqa: ANN001
    world = arranged
    pretrade = deployment["processes"]["worker-pretrade"]
    # when two orders are checked through the compose deployment's broker
    approved = world.check(world.order("rich", quantity="1"))
    rejected = world.check(world.order("poor", quantity="1"))
    # then the pretrade process decided them, by the pinned rules
    assert approved["approved"] is True, approved
    assert rejected["approved"] is False
    assert rejected["rejection_reason"] == "insufficient_margin"
    records = world.audit_records()
    assert {r.get("w") for r in records} == {f"{HOSTNAME}:{pretrade.popen.pid}"}, records


def test_beat_ticks_are_swept_by_worker_monitor(deployment, arranged, rt) -> None:  # noqa: ANN001
    # given beat running the compose command: ticks keep completing, one per second
    first = last_tick(rt, 0)
    wait_until(lambda: last_tick(rt, float(first["finished_at"])), timeout=30,
               message="another tick")
    summary = last_tick(rt, 0)
    # then each is a full sweep over every shard, on time
    assert summary["accounts"] == "2"
    assert int(summary["shards"]) == int(os.environ["RISK_SHARDS"])
    assert summary["failed_shards"] == ""
    assert abs(float(summary["tick_ts"]) - time.time()) < 30


def test_worker_ops_drains_the_audit_into_postgresql(deployment, arranged) -> None:  # noqa: ANN001
    world = arranged
    decision = world.check(world.order("rich", quantity="2"))
    # beat sends risk.drain_journal every second; worker-ops runs it
    rows = wait_until(lambda: [r for r in world.order_check_rows()
                               if r.order_id == decision["order_id"]],
                      timeout=60, message="the decision drained to order_checks")
    assert rows[0].approved is True


def test_control_queue_is_served_by_worker_pretrade(deployment, arranged) -> None:  # noqa: ANN001
    status = arranged.control("emergency_status")
    assert status["success"] is True


# -- HEALTH --

@pytest.mark.parametrize("service", ENGINE_PROCESSES)
def test_health_endpoint_of_each_process_answers(deployment, service) -> None:  # noqa: ANN001
    process = deployment["processes"][service]
    status, body = http_get(f"http://127.0.0.1:{process.port}/health")
    health = orjson.loads(body)
    assert status == 200, health
    assert health["status"] == "ok" and health["redis"] == "ok" and health["broker"] == "ok"
    assert health["command"] == ("beat" if service == "beat" else "worker")
    assert health["pid"] == process.popen.pid


@pytest.mark.parametrize("service", [*ENGINE_PROCESSES, "flower"])
def test_compose_health_check_commands_pass(deployment, service) -> None:  # noqa: ANN001
    process = deployment["processes"][service]
    test = deployment["services"][service]["healthcheck"]["test"]
    assert test[0] == "CMD"
    argv = compose.local_command(test[1:])
    if service == "flower":
        argv = [a.replace(":5555/", f":{process.env['FLOWER_PORT_LOCAL']}/") for a in argv]

    def passes() -> subprocess.CompletedProcess | None:
        result = subprocess.run(argv, env=process.env, cwd=deployment["workdir"],
                                capture_output=True, text=True, timeout=60)
        return result if result.returncode == 0 else None

    result = wait_until(passes, timeout=60, interval=1.0, message=f"{service}'s health check")
    assert result.stdout.startswith("healthy:")


def test_worker_health_check_fails_for_a_worker_that_is_not_there(deployment) -> None:  # noqa: ANN001
    process = deployment["processes"]["worker-monitor"]
    argv = compose.local_command(["python", "/opt/risk/healthcheck.py", "--timeout", "2",
                                  "worker", "monitor", "--node", f"monitor@not-{HOSTNAME}"])
    result = subprocess.run(argv, env=process.env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "did not answer" in result.stdout


def test_flower_requires_the_credentials_of_the_env_file(deployment) -> None:  # noqa: ANN001
    flower = deployment["processes"]["flower"]
    url = f"http://127.0.0.1:{flower.env['FLOWER_PORT_LOCAL']}"
    wait_until(lambda: http_get(f"{url}/healthcheck")[0] == 200, timeout=60,
               message="flower up")
    assert http_get(f"{url}/api/workers")[0] == 401
    assert http_get(f"{url}/api/workers", auth="operator:wrong")[0] == 401
    assert http_get(f"{url}/api/workers", auth=deployment["env"]["FLOWER_BASIC_AUTH"],
                    timeout=TASK_TIMEOUT)[0] == 200
