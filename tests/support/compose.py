"""docker-compose.yml as data, for tests that cannot run Docker.

There is no Docker engine where the tests run, so the compose file is read here the way
Compose reads it: YAML (with its anchors and ``<<`` merge keys) and then variable
interpolation from an env file (``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``,
``${VAR:?error}``, ``${VAR?error}``, ``$VAR``, and ``$$`` for a literal ``$``). A unit
test checks this reading against the real ``docker-compose config``.

``local_environment`` turns a service's environment into one for a process on this
machine: container host names (``redis``, ``postgres``) become the test servers.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlsplit, urlunsplit

import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
MAKE_ENV = ROOT / "deploy" / "make-env.sh"

WORKER_SERVICES = {"worker-pretrade": "pretrade", "worker-monitor": "monitor",
                   "worker-actions": "actions", "worker-ops": "ops"}

# ${NAME...} or $NAME; $$ is a literal dollar.
_VAR = re.compile(r"\$(?:(?P<escaped>\$)|\{(?P<braced>[^}]*)\}|(?P<named>[A-Za-z_][A-Za-z0-9_]*))")
_BRACED = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:-|-|:\?|\?|:\+|\+)(?P<arg>.*))?$",
                     re.DOTALL)


class InterpolationError(ValueError):
    """A required variable is missing, or a reference is malformed."""


def load(path: Path = COMPOSE_FILE) -> dict[str, Any]:
    """The compose file as YAML, before interpolation."""
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def variables(value: Any) -> set[str]:
    """Names of every variable referenced anywhere in ``value`` (strings, lists, dicts)."""
    found: set[str] = set()
    for text in _strings(value):
        for m in _VAR.finditer(text):
            if m.group("escaped"):
                continue
            if m.group("named"):
                found.add(m.group("named"))
                continue
            parsed = _BRACED.match(m.group("braced"))
            if parsed is None:
                raise InterpolationError(f"malformed reference ${{{m.group('braced')}}}")
            found.add(parsed.group("name"))
    return found


def references(text: str) -> list[tuple[str, str | None, str | None]]:
    """``(name, operator, argument)`` of each ``${...}`` reference in ``text``."""
    out = []
    for m in _VAR.finditer(text):
        if m.group("braced") is not None:
            parsed = _BRACED.match(m.group("braced"))
            if parsed is None:
                raise InterpolationError(f"malformed reference ${{{m.group('braced')}}}")
            out.append((parsed.group("name"), parsed.group("op"), parsed.group("arg")))
        elif m.group("named"):
            out.append((m.group("named"), None, None))
    return out


def interpolate(value: Any, env: Mapping[str, str]) -> Any:
    """``value`` with every reference replaced as Compose does it."""
    if isinstance(value, str):
        return _VAR.sub(lambda m: _substitute(m, env), value)
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    return value


def _substitute(m: re.Match, env: Mapping[str, str]) -> str:
    if m.group("escaped"):
        return "$"
    if m.group("named"):
        return env.get(m.group("named"), "")
    parsed = _BRACED.match(m.group("braced"))
    if parsed is None:
        raise InterpolationError(f"malformed reference ${{{m.group('braced')}}}")
    name, op, arg = parsed.group("name"), parsed.group("op"), parsed.group("arg")
    value = env.get(name)
    if op == ":-":
        return value if value else arg
    if op == "-":
        return arg if value is None else value
    if op == ":?":
        if not value:
            raise InterpolationError(f"{name}: {arg}")
        return value
    if op == "?":
        if value is None:
            raise InterpolationError(f"{name}: {arg}")
        return value
    if op == ":+":
        return arg if value else ""
    if op == "+":
        return "" if value is None else arg
    return value or ""


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=value`` lines of an env file (comments and blank lines skipped)."""
    values: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise ValueError(f"{path}: not KEY=value: {line!r}")
        values[key.strip()] = value.strip()
    return values


def make_env(out: Path) -> dict[str, str]:
    """Run deploy/make-env.sh into ``out`` (a file that must not exist); its values."""
    subprocess.run(["sh", str(MAKE_ENV), str(out)], check=True, capture_output=True, timeout=30)
    return read_env_file(out)


def config(env: Mapping[str, str], path: Path = COMPOSE_FILE) -> dict[str, Any]:
    """The compose file interpolated with ``env``; ``x-`` extension keys dropped."""
    raw = load(path)
    return {k: interpolate(v, env) for k, v in raw.items() if not k.startswith("x-")}


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment as a dict (Compose accepts a list of KEY=value too)."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def command(service: dict[str, Any]) -> list[str]:
    cmd = service.get("command")
    if isinstance(cmd, str):
        raise AssertionError(f"command should be a list (exec form), not {cmd!r}")
    return list(cmd or [])


# -- FROM CONTAINERS TO THIS MACHINE --

def translate_url(url: str, hosts: Mapping[str, str]) -> str:
    """``redis://:pw@redis:6379/2`` with ``hosts={"redis": "redis://127.0.0.1:7001"}``
    becomes ``redis://127.0.0.1:7001/2``: the scheme, credentials and address of the
    local server, the path (database number or name) of the compose file's URL, unless
    the local URL names a path of its own (a PostgreSQL database), which wins."""
    parts = urlsplit(url)
    local = hosts.get(parts.hostname or "")
    if local is None:
        return url
    target = urlsplit(local)
    path = target.path if target.path not in ("", "/") else parts.path
    return urlunsplit((target.scheme, target.netloc, path, parts.query, parts.fragment))


def local_environment(service: dict[str, Any], hosts: Mapping[str, str],
                      overrides: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: translate_url(v, hosts) if "://" in v else v
           for k, v in environment(service).items()}
    env.update(overrides or {})
    return env


def local_command(argv: list[str]) -> list[str]:
    """A container command line for this machine: programs from this interpreter's
    environment (``riskctl``, ``celery``, ``python``), the image's healthcheck script
    from the repository."""
    bindir = Path(sys.executable).parent
    out = []
    for i, arg in enumerate(argv):
        if i == 0:
            if arg == "python":
                arg = sys.executable
            elif (bindir / arg).exists():
                arg = str(bindir / arg)
            else:
                arg = shutil.which(arg) or arg
        elif arg == "/opt/risk/healthcheck.py":
            arg = str(ROOT / "deploy" / "healthcheck.py")
        out.append(arg)
    return out


def _strings(value: Any):  # noqa: ANN202 - generator of str
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(k)
            yield from _strings(v)
