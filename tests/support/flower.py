"""Flower as a real process (the command line ``riskctl run`` starts), and headless
Chromium to take a picture of a page."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from risk_tasks.roles import flower_command
from tests.support.services import free_port


@dataclass
class Flower:
    user: str = "operator"
    password: str = "flower-test-secret"
    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    log_path: Path = field(default_factory=lambda: Path(
        os.environ.get("RISK_TEST_LOG_DIR", "/tmp")) / f"flower-{os.getpid()}.log")
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def auth(self) -> tuple[str, str]:
        return self.user, self.password

    def start(self, timeout: float = 60.0) -> "Flower":
        env = dict(os.environ, **self.env, FLOWER_BASIC_AUTH=f"{self.user}:{self.password}")
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(flower_command(self.port), env=env, stdout=log,
                                        stderr=log, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"flower exited: see {self.log_path}")
            try:
                if requests.get(f"{self.url}/healthcheck", timeout=2).status_code == 200:
                    return self
            except requests.ConnectionError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"flower not answering after {timeout}s: see {self.log_path}")

    def get(self, path: str, **kwargs) -> requests.Response:  # noqa: ANN003
        return requests.get(f"{self.url}{path}", auth=self.auth, timeout=30, **kwargs)

    def post(self, path: str, **kwargs) -> requests.Response:  # noqa: ANN003
        return requests.post(f"{self.url}{path}", auth=self.auth, timeout=30, **kwargs)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=5)


def chromium() -> str | None:
    """Debian's headless Chromium, if installed."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


def screenshot(url: str, out: Path, width: int = 1400, height: int = 900,
               wait_ms: int = 4000) -> Path:
    """A PNG of ``url`` taken by headless Chromium (no network beyond the page itself).

    The flags keep Chromium off the network it would otherwise call at start (this
    machine has none) and let it run as root in a container.
    """
    binary = chromium()
    if binary is None:
        raise FileNotFoundError("chromium is not installed (apt-get install chromium)")
    profile = tempfile.mkdtemp(prefix="risk-chromium-")
    try:
        subprocess.run(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--disable-dev-shm-usage", "--hide-scrollbars",
             f"--user-data-dir={profile}", f"--window-size={width},{height}",
             f"--virtual-time-budget={wait_ms}", f"--screenshot={out}", url],
            check=True, capture_output=True, timeout=120)
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    return out


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's header."""
    data = path.read_bytes()[:24]
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
