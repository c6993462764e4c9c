"""Throw-away Redis and PostgreSQL servers on 127.0.0.1, started by the test session.

If ``RISK_TEST_REDIS_URL`` / ``RISK_TEST_DATABASE_URL`` are set, those servers are used
instead. A missing server binary is an error, never a silent skip.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg_bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    for version in ("17", "16", "15"):
        path = f"/usr/lib/postgresql/{version}/bin/{name}"
        if os.path.exists(path):
            return path
    raise RuntimeError(f"{name} not found: install PostgreSQL 15+ (see .ci/run)")


@dataclass
class RedisServer:
    port: int = field(default_factory=free_port)
    password: str = ""
    appendonly: bool = True
    dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="risk-redis-")))
    process: subprocess.Popen | None = None

    def url(self, db: int) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/{db}"

    @property
    def socket(self) -> Path:
        """Its Unix socket (it listens on both), for clients on this host."""
        return self.dir / "redis.sock"

    def socket_urls(self) -> dict[str, str]:
        """RISK_* URLs of the engine over the Unix socket: broker, backend, hot state."""
        auth = f":{self.password}@" if self.password else ""
        return {"RISK_BROKER_URL": f"redis+socket://{auth}{self.socket}?virtual_host=0",
                "RISK_RESULT_BACKEND": f"redis+socket://{auth}{self.socket}?virtual_host=1",
                "RISK_REDIS_URL": f"unix://{auth}{self.socket}?db=2"}

    def start(self) -> "RedisServer":
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server not found: apt-get install -y redis-server")
        args = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
                "--save", "", "--appendonly", "yes" if self.appendonly else "no",
                "--appendfsync", "everysec", "--protected-mode", "no", "--daemonize", "no",
                "--loglevel", "warning", "--logfile", str(self.dir / "redis.log"),
                "--unixsocket", str(self.socket), "--unixsocketperm", "700"]
        if self.password:
            args += ["--requirepass", self.password]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._wait()
        return self

    def _wait(self, timeout: float = 10) -> None:
        import redis

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                redis.Redis.from_url(self.url(0)).ping()
                return
            except redis.RedisError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server on port {self.port} did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None

    def restart(self, down_seconds: float = 0.0) -> None:
        """Stop (with its append-only file flushed) and start again on the same port."""
        self.stop()
        time.sleep(down_seconds)
        self.start()

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@dataclass
class PostgresServer:
    port: int = field(default_factory=free_port)
    dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="risk-pg-")))
    user: str = "risk"
    password: str = "risk-test-only"
    database: str = "risk"

    @property
    def url(self) -> str:
        return (f"postgresql+psycopg://{self.user}:{self.password}@127.0.0.1:{self.port}/"
                f"{self.database}")

    def _run(self, args: list[str], **kw) -> subprocess.CompletedProcess:
        if os.geteuid() == 0:  # initdb and postgres refuse to run as root
            args = ["runuser", "-u", "postgres", "--"] + args
        return subprocess.run(args, check=True, capture_output=True, text=True, **kw)

    def start(self) -> "PostgresServer":
        data = self.dir / "data"
        if os.geteuid() == 0:
            pwd.getpwnam("postgres")  # KeyError: create the user (see .ci/run)
            shutil.chown(self.dir, "postgres")
        pwfile = self.dir / "pw"
        pwfile.write_text(self.password)
        if os.geteuid() == 0:
            shutil.chown(pwfile, "postgres")
        self._run([_pg_bin("initdb"), "-D", str(data), "-U", self.user, "-A", "scram-sha-256",
                   "--pwfile", str(pwfile), "-E", "UTF8"])
        self.start_server()
        env = dict(os.environ, PGPASSWORD=self.password)
        subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user,
                        "-d", "postgres", "-c", f"CREATE DATABASE {self.database}"],
                       check=True, capture_output=True, env=env)
        return self

    def start_server(self) -> None:
        data = self.dir / "data"
        self._run([_pg_bin("pg_ctl"), "-D", str(data), "-l", str(self.dir / "pg.log"), "-w",
                   "-o", f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.dir} "
                         "-c fsync=off -c synchronous_commit=off -c max_connections=300",
                   "start"])

    def stop(self) -> None:
        data = self.dir / "data"
        if data.exists():
            self._run([_pg_bin("pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
                      timeout=60)

    def cleanup(self) -> None:
        try:
            self.stop()
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)
