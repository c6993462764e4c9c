"""The ``/metrics`` and ``/health`` endpoint of a worker host (and of beat).

One HTTP server per host process, started in the main process on ``worker_init`` (or
``beat_init``) when ``RISK_METRICS_PORT`` is not 0. It serves:

- ``/metrics``: every engine metric of the host and of all its prefork children, merged
  from the prometheus-client multiprocess files, plus three gauges read from Redis at
  scrape time (``risk_redis_up``, ``risk_audit_backlog``, ``risk_emergency_stop_active``)
  so that they are current even when no task has run for a while;
- ``/health``: JSON ``{"status": "ok"|"unavailable", "redis": ..., "broker": ...}``,
  200 when Redis (state and broker) answers a PING, 503 when it does not.

Multiprocess bookkeeping (the client's rules for prefork):

- Each host has a directory of its own: ``RISK_METRICS_DIR`` (wiped when the host
  starts, so files of an earlier run, whose pids may be reused in a container, never
  add up) or, when that is empty, a fresh temporary directory. A
  ``PROMETHEUS_MULTIPROC_DIR`` inherited from a parent process is not used: it belongs
  to the parent. This happens on ``import_modules``, before the task modules (and
  with them ``risk_tasks.metrics``) are imported.
- A pool child that exits is marked dead (``multiprocess.mark_process_dead``); its
  counters stay in the directory, so totals never go down when a child is replaced.
"""

from __future__ import annotations

import glob
import logging
import os
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator

import orjson
from celery.signals import (
    beat_init, import_modules, worker_init, worker_process_shutdown, worker_shutdown,
)

from risk_tasks.logs import configure_logging, log_event
from risk_tasks.settings import client_url, get_settings

log = logging.getLogger(__name__)

# Commands whose process is a host with a metrics directory and an endpoint of its own.
HOST_COMMANDS = ("worker", "beat")
PROBE_TIMEOUT_SECONDS = 1.0


def celery_command() -> str | None:
    """The ``celery`` sub-command this process runs (``worker``, ``beat``, ``flower``)."""
    import click

    ctx = click.get_current_context(silent=True)
    return ctx.info_name if ctx is not None else None


# -- THE METRICS DIRECTORY --

def wipe_directory(path: str) -> int:
    """Remove the multiprocess files of an earlier run from ``path``; returns how many."""
    removed = 0
    for name in glob.glob(os.path.join(path, "*.db")):
        try:
            os.remove(name)
            removed += 1
        except FileNotFoundError:
            pass
    return removed


@import_modules.connect
def _own_metrics_directory(sender: Any = None, **_: Any) -> None:
    command = celery_command()
    if command == "flower":
        configure_logging()  # Flower's own (tornado) records as JSON lines too
        return
    if command not in HOST_COMMANDS:
        return
    prepare_directory()


def prepare_directory() -> None:
    """Give this host process its own, empty metrics directory (before the metrics
    module is imported; once it is, the directory is fixed for the process)."""
    if "risk_tasks.metrics" in sys.modules:
        return
    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    configured = get_settings().metrics_dir
    if configured:
        os.makedirs(configured, exist_ok=True)
        wipe_directory(configured)
    import risk_tasks.metrics  # noqa: F401  (sets PROMETHEUS_MULTIPROC_DIR for the pool)


@worker_process_shutdown.connect
def _mark_child_dead(pid: int | None = None, **_: Any) -> None:
    from prometheus_client import multiprocess

    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if path and os.path.isdir(path):
        multiprocess.mark_process_dead(pid or os.getpid(), path)


# -- WHAT A SCRAPE READS --

class Probe:
    """Reads the live gauges and the health of Redis (its own client, short timeouts)."""

    def __init__(self, command: str) -> None:
        import redis

        settings = get_settings()
        self.command = command
        self.urls = {"redis": settings.redis_url}
        broker = client_url(settings.broker_url)
        if broker.startswith(("redis://", "rediss://", "unix://")) \
                and broker != settings.redis_url:
            self.urls["broker"] = broker
        self.clients = {name: redis.Redis.from_url(url, socket_timeout=PROBE_TIMEOUT_SECONDS,
                                                   socket_connect_timeout=PROBE_TIMEOUT_SECONDS)
                        for name, url in self.urls.items()}

    def health(self) -> dict[str, Any]:
        checks: dict[str, str] = {}
        for name, client in self.clients.items():
            try:
                client.ping()
                checks[name] = "ok"
            except Exception as exc:  # noqa: BLE001 - any failure is "not answering"
                checks[name] = f"error: {exc.__class__.__name__}: {exc}"[:300]
        healthy = all(v == "ok" for v in checks.values())
        return {"status": "ok" if healthy else "unavailable", **checks,
                "host": socket.gethostname(), "pid": os.getpid(),
                "command": self.command,
                "metrics_dir": os.environ.get("PROMETHEUS_MULTIPROC_DIR")}

    def live(self) -> dict[str, Any]:
        """``{"redis_up": 0|1, "backlog": {stream: n}, "halted": bool|None}``."""
        from risk_tasks.journal import STREAMS
        from risk_tasks.state import keys

        client = self.clients["redis"]
        try:
            pipe = client.pipeline(transaction=False)
            for stream in STREAMS:
                pipe.xlen(stream)
            pipe.hget(keys.PLATFORM_STATE, "state")
            *lengths, state = pipe.execute()
        except Exception:  # noqa: BLE001 - Redis away: report it, never fail the scrape
            return {"redis_up": 0, "backlog": {}, "halted": None}
        return {"redis_up": 1, "backlog": dict(zip(STREAMS, lengths)),
                "halted": (state or b"").decode() == "HALTED"}

    def close(self) -> None:
        for client in self.clients.values():
            client.close()


class EngineCollector:
    """The multiprocess files of this host, with the live gauges read from Redis."""

    def __init__(self, path: str, probe: Probe) -> None:
        from prometheus_client.multiprocess import MultiProcessCollector

        from risk_tasks import metrics

        self.files = MultiProcessCollector(None, path)
        self.probe = probe
        self.backlog = metrics.AUDIT_BACKLOG
        self.stop = metrics.EMERGENCY_STOP_ACTIVE
        self.redis_up = metrics.REDIS_UP
        self.replaced = {self.backlog._name, self.stop._name, self.redis_up._name}

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        for family in self.files.collect():
            if family.name not in self.replaced:
                yield family
        live = self.probe.live()
        yield GaugeMetricFamily(self.redis_up._name, self.redis_up._documentation,
                                value=live["redis_up"])
        backlog = GaugeMetricFamily(self.backlog._name, self.backlog._documentation,
                                    labels=["stream"])
        for stream, length in live["backlog"].items():
            backlog.add_metric([stream], length)
        yield backlog
        if live["halted"] is not None:
            yield GaugeMetricFamily(self.stop._name, self.stop._documentation,
                                    value=1 if live["halted"] else 0)


# -- THE HTTP SERVER --

class _Handler(BaseHTTPRequestHandler):
    server: "MetricsServer"

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

            self._reply(200, CONTENT_TYPE_LATEST, generate_latest(self.server.registry))
        elif path == "/health":
            health = self.server.probe.health()
            self._reply(200 if health["status"] == "ok" else 503, "application/json",
                        orjson.dumps(health))
        else:
            self._reply(404, "text/plain", b"not found: try /metrics or /health\n")

    def _reply(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass  # one scrape every few seconds is not worth a log line


class MetricsServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, host: str, port: int, path: str, command: str) -> None:
        from prometheus_client import CollectorRegistry

        super().__init__((host, port), _Handler)
        self.probe = Probe(command)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(EngineCollector(path, self.probe))
        self.thread = threading.Thread(target=self.serve_forever, name="risk-metrics",
                                       daemon=True)

    def start(self) -> "MetricsServer":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        self.probe.close()


_server: dict[str, MetricsServer] = {}


def start_endpoint(command: str) -> MetricsServer | None:
    """Serve /metrics and /health on ``RISK_METRICS_HOST:RISK_METRICS_PORT`` (0: off)."""
    settings = get_settings()
    if settings.metrics_port == 0 or "server" in _server:
        return _server.get("server")
    prepare_directory()  # beat imports no task module: its directory is set here

    path = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    try:
        server = MetricsServer(settings.metrics_host, settings.metrics_port, path,
                               command).start()
    except OSError as exc:
        # A taken port must not stop the worker: it still decides orders.
        log_event(log, "metrics endpoint not started", logging.ERROR,
                  port=settings.metrics_port, error=str(exc))
        return None
    _server["server"] = server
    log_event(log, "metrics endpoint listening", host=settings.metrics_host,
              port=server.server_address[1], metrics_dir=path, started=time.time())
    return server


def stop_endpoint() -> None:
    server = _server.pop("server", None)
    if server is not None:
        server.stop()


@worker_init.connect
def _worker_endpoint(**_: Any) -> None:
    start_endpoint("worker")


@beat_init.connect
def _beat_endpoint(**_: Any) -> None:
    start_endpoint("beat")


@worker_shutdown.connect
def _stop_endpoint(**_: Any) -> None:
    stop_endpoint()
