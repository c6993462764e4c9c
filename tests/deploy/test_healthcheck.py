"""deploy/healthcheck.py: the verdicts of its checks (the real /health and ping of a
running worker are checked in tests/integration/test_compose_commands.py)."""

from __future__ import annotations

import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "deploy"))
import healthcheck  # noqa: E402

sys.path.pop(0)


class _Status(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:  # noqa: N802
        self.send_response(self.server.status)  # type: ignore[attr-defined]
        self.end_headers()

    def log_message(self, *args) -> None:  # noqa: ANN002
        pass


@pytest.fixture()
def http_server():  # noqa: ANN201
    server = HTTPServer(("127.0.0.1", 0), _Status)
    server.status = 200  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_health_mode_passes_on_200_and_fails_on_503(http_server, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("RISK_METRICS_PORT", str(http_server.server_address[1]))
    assert healthcheck.main(["health"]) == 0
    http_server.status = 503
    assert healthcheck.main([]) == 1


def test_health_mode_fails_when_nothing_listens(monkeypatch) -> None:  # noqa: ANN001
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("RISK_METRICS_PORT", str(port))
    assert healthcheck.main(["--timeout", "1"]) == 1


def test_beat_schedule_file_must_be_fresh(tmp_path) -> None:  # noqa: ANN001
    schedule = tmp_path / "celerybeat-schedule"
    assert healthcheck.check_beat(str(schedule), 300)[0] is False
    (tmp_path / "celerybeat-schedule.db").write_bytes(b"x")
    assert healthcheck.check_beat(str(schedule), 300)[0] is True
    old = time.time() - 600
    os.utime(tmp_path / "celerybeat-schedule.db", (old, old))
    ok, why = healthcheck.check_beat(str(schedule), 300)
    assert ok is False and "not written" in why


def test_broker_mode_reports_an_unreachable_broker(monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("RISK_BROKER_URL", "redis://127.0.0.1:1/0")
    assert healthcheck.main(["--timeout", "1", "broker"]) == 1


def test_unknown_role_is_a_usage_error() -> None:
    with pytest.raises(SystemExit) as exc:
        healthcheck.main(["worker", "nobody"])
    assert exc.value.code == 2
