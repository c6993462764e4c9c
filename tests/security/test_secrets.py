"""No secret is stored in the repository, and credentials reach every process only
through ``RISK_*`` variables.

The scan reads every file git tracks for password-like assignments, URLs with
credentials, private keys and cloud keys. Documented placeholders (``user:password``,
``${VAR}``, the test servers' throw-away password, ...) are allowed by name below.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Literal values that are placeholders or throw-away test credentials, never secrets.
ALLOWED_VALUES = {
    "password", "secret", "changeme", "change-me", "example", "xxx", "***", "****",
    "user:password", "risk-test-only",  # tests/support/services.py: throw-away clusters
    "pw", "pass",
    # fake credentials the tests feed in to check that they are passed on and masked
    "hunter2", "s3cret", "ops:pw-123",
}
ALLOWED_VALUE_PATTERNS = [
    re.compile(r"^\$\{?[A-Z_][A-Z0-9_]*(:-[^}]*)?\}?$"),  # ${RISK_X}, $FLOWER_PASSWORD
    re.compile(r"^<[^>]+>$"),  # <password>
    re.compile(r"^\{[a-z_.]+\}$"),  # {password} in an f-string
    re.compile(r"^%\([a-z_]+\)s$"),
]

ASSIGNMENT = re.compile(
    r"""(?ix)(password|passwd|pwd|secret|api[_-]?key|access[_-]?key|token|basic_auth)
    ["']?\s*[:=]\s*["']([^"'\s]{3,})["']""")
URL_CREDENTIALS = re.compile(r"[a-z][a-z0-9+.-]*://([^/\s:@'\"]*):([^@\s/'\"]+)@")
PRIVATE_KEY = re.compile(r"-----BEGIN (?:RSA |EC |DSA |OPENSSH |ENCRYPTED )?PRIVATE KEY-----")
CLOUD_KEYS = re.compile(r"\b(AKIA[0-9A-Z]{16}|ghp_[A-Za-z0-9]{36}|xox[bp]-[A-Za-z0-9-]{20,}|"
                        r"sk_live_[A-Za-z0-9]{20,})\b")


def allowed(value: str) -> bool:
    v = value.strip()
    return v.lower() in ALLOWED_VALUES or any(p.match(v) for p in ALLOWED_VALUE_PATTERNS) \
        or "{" in v or v.startswith("$")


def findings_in(text: str, name: str = "<text>") -> list[str]:
    found = []
    for number, line in enumerate(text.splitlines(), start=1):
        where = f"{name}:{number}"
        if PRIVATE_KEY.search(line):
            found.append(f"{where}: private key")
        if CLOUD_KEYS.search(line):
            found.append(f"{where}: cloud or service key")
        for m in URL_CREDENTIALS.finditer(line):
            if not allowed(m.group(2)):
                found.append(f"{where}: URL with credentials ({m.group(1)}:***)")
        for m in ASSIGNMENT.finditer(line):
            if not allowed(m.group(2)):
                found.append(f"{where}: {m.group(1)} assigned a literal")
    return found


def tracked_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True)
    return [ROOT / p for p in out.stdout.decode().split("\0") if p]


def test_the_scanner_finds_each_kind_of_secret():
    # (assembled here so that the scan of this very file finds nothing)
    leaked = "\n".join([
        "pass" + 'word = "Tr0ub4dor&3"',
        "RISK_BROKER_URL=redis://:" + "s3cr3t-v4lue@cache:6379/0",
        "-----BEGIN RSA " + "PRIVATE KEY-----",
        "aws = " + "AKIA" + "ABCDEFGHIJKLMNOP",
        '"flower_basic' + '_auth": "admin:letmein99"',
    ])
    assert len(findings_in(leaked)) == 5
    assert findings_in('password = "${RISK_DB_PASSWORD}"\nurl = "redis://:{password}@h"') == []


def test_no_literal_secret_in_any_tracked_file():
    files = tracked_files()
    assert len(files) > 50
    found = []
    for path in files:
        if path.suffix in {".png", ".jpg", ".gz", ".ico"} or not path.is_file():
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        found += findings_in(text, str(path.relative_to(ROOT)))
    assert found == []


@pytest.mark.parametrize("name", ["broker_url", "result_backend", "redis_url", "database_url",
                                  "flower_basic_auth", "gateway_url", "alert_webhook_url"])
def test_no_setting_has_a_credential_by_default(name):
    from risk_tasks.settings import Settings

    default = getattr(Settings(), name)
    assert not URL_CREDENTIALS.search(default) and ":" not in default.split("@")[0][-1:]
    assert name != "flower_basic_auth" or default == ""
