"""``celery beat`` as a real process, started with the command line an operator uses."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Beat:
    schedule_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    name: str = field(default_factory=lambda: f"beat-{uuid.uuid4().hex[:8]}")
    log_dir: Path = field(default_factory=lambda: Path(os.environ.get("RISK_TEST_LOG_DIR", "/tmp")))
    process: subprocess.Popen | None = None

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"{self.name}.log"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "celery", "-A", "risk_tasks", "beat",
                "-s", str(self.schedule_dir / f"{self.name}-schedule"), "-l", "info"]

    def start(self) -> "Beat":
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.schedule_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(self.command(), env=dict(os.environ, **self.env),
                                        stdout=log, stderr=log, start_new_session=True)
        return self

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 15.0) -> None:
        if not self.running:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def logs(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
