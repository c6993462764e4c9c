"""STYLE.md rule 1: ``risk_tasks/engine/`` is pure. No Celery, Redis, SQL or network."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENGINE = ROOT / "risk_tasks" / "engine"
ENGINE_MODULES = sorted(
    "risk_tasks.engine" + ("" if p.stem == "__init__" else f".{p.stem}")
    for p in ENGINE.glob("*.py")
)
# Roots of modules the engine must never load, directly or through a dependency.
FORBIDDEN = {
    "celery", "kombu", "billiard", "redis", "hiredis", "sqlalchemy", "alembic", "psycopg",
    "psycopg2", "psycopg_binary", "requests", "httpx", "urllib3", "aiohttp", "http",
    "socket", "ssl", "asyncio", "flower", "prometheus_client",
}
# Pure, in-process computation libraries the engine may use besides the standard library.
ALLOWED_THIRD_PARTY = {"numpy"}


def loaded_roots(modules: list[str]) -> set[str]:
    """Top-level names in ``sys.modules`` of a fresh interpreter after importing ``modules``."""
    code = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout))


def test_every_engine_module_is_found() -> None:
    assert {"risk_tasks.engine", "risk_tasks.engine.model", "risk_tasks.engine.metrics",
            "risk_tasks.engine.positions", "risk_tasks.engine.policies",
            "risk_tasks.engine.pretrade", "risk_tasks.engine.liquidation",
            "risk_tasks.engine.validation"} <= set(ENGINE_MODULES)


def test_importing_the_engine_loads_no_infrastructure_module() -> None:
    loaded = loaded_roots(ENGINE_MODULES)
    assert "risk_tasks" in loaded  # the import did happen
    assert loaded & FORBIDDEN == set()


def test_the_import_probe_sees_an_infrastructure_module_when_one_is_loaded() -> None:
    # guards the test above: the probe must notice a module that pulls in the network
    assert {"http", "socket"} <= loaded_roots(ENGINE_MODULES + ["http.client"])


def imports_of(path: Path) -> set[str]:
    """Every module a source file names in ``import``/``from ... import`` or
    ``importlib.import_module("...")``/``__import__("...")`` with a literal."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path.name}: relative import"
            found.add(node.module or "")
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in ("import_module", "__import__"):
                found.add(str(node.args[0].value))
    return found


@pytest.mark.parametrize("path", sorted(ENGINE.glob("*.py")), ids=lambda p: p.name)
def test_engine_source_imports_only_the_standard_library_and_the_engine(path: Path) -> None:
    for module in imports_of(path):
        root = module.split(".")[0]
        assert root not in FORBIDDEN, f"{path.name} imports {module}"
        assert (module.startswith("risk_tasks.engine") or root in sys.stdlib_module_names
                or root in ALLOWED_THIRD_PARTY), (
            f"{path.name} imports {module}: not the engine, the standard library or an "
            f"allowed computation library")
