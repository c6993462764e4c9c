"""What deploy/Dockerfile installs works without the source tree.

The image's build stage copies a few files (``COPY`` lines of deploy/Dockerfile) and
installs them as a regular package; the runtime stage has no source tree. Without a
Docker engine, the same is done here: exactly the files the Dockerfile copies go into an
empty directory, a wheel is built from it, installed into another directory, and run
from a third, with no path to the repository. Then the package must find its Celery
config, task modules, Lua scripts and migrations, and ``riskctl db upgrade`` must
create the schema in a fresh PostgreSQL database.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import uuid
from pathlib import Path

import pytest

from tests.deploy.test_dockerfile import ROOT, stages

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PROBE = """
import os, celeryconfig, models, risk_tasks
from risk_tasks.app import app
from risk_tasks.state import store
app.loader.import_default_modules()
assert "risk.check_order" in app.tasks and "risk.evaluate_shard" in app.tasks
for module in (celeryconfig, models, risk_tasks, store):
    assert not module.__file__.startswith(os.environ["REPO"]), module.__file__
lua = os.path.join(os.path.dirname(store.__file__), "lua")
assert any(name.endswith(".lua") for name in os.listdir(lua)), lua
print("ok")
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:  # noqa: ANN001
    context = tmp_path_factory.mktemp("context")
    for keyword, rest in stages()[0]:
        if keyword != "COPY":
            continue
        *sources, _ = rest.split()
        for source in sources:
            src = ROOT / source
            if src.is_dir():
                shutil.copytree(src, context / source,
                                ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                shutil.copy2(src, context / source)
    wheels = tmp_path_factory.mktemp("wheels")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w",
                            str(wheels), str(context)], capture_output=True, text=True,
                           timeout=600)
    assert build.returncode == 0, build.stderr[-3000:]
    site = tmp_path_factory.mktemp("site")
    install = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                              "--target", str(site), *map(str, wheels.glob("*.whl"))],
                             capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr[-3000:]
    return site


def run_installed(site: Path, cwd: Path, *args: str, env: dict[str, str] | None = None
                  ) -> subprocess.CompletedProcess:
    """Python without site processing (so the repository's editable install is not on
    the path): the installed package, then this environment's dependencies."""
    deps = sysconfig.get_paths()["purelib"]
    environ = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    environ.update(PYTHONPATH=f"{site}{os.pathsep}{deps}", REPO=str(ROOT), **(env or {}))
    return subprocess.run([sys.executable, "-S", *args], cwd=cwd, env=environ,
                          capture_output=True, text=True, timeout=120)


def test_the_installed_package_has_its_config_tasks_and_scripts(installed, tmp_path) -> None:  # noqa: ANN001
    result = run_installed(installed, tmp_path, "-c", PROBE)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "ok"


def test_riskctl_db_upgrade_creates_the_schema_from_the_installed_package(installed, tmp_path) -> None:  # noqa: ANN001
    from sqlalchemy import create_engine, inspect, text
    from sqlalchemy.engine import make_url

    # given a fresh, empty database on the test server
    url = make_url(os.environ["RISK_DATABASE_URL"])
    name = f"risk_image_{uuid.uuid4().hex[:8]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    fresh = url.set(database=name)
    try:
        # when the installed riskctl upgrades it
        result = run_installed(installed, tmp_path, "-m", "risk_tasks.cli", "db", "upgrade",
                               env={"RISK_DATABASE_URL": fresh.render_as_string(
                                   hide_password=False)})
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
        # then every table is there
        engine = create_engine(fresh)
        try:
            tables = set(inspect(engine).get_table_names())
        finally:
            engine.dispose()
        assert {"accounts", "order_checks", "risk_policies", "alembic_version"} <= tables
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
