"""Container health checks of the risk engine: one script, one mode per kind of process.

    healthcheck.py [health]            this container's /health answers 200 (the image's
                                       default: workers and beat serve it on
                                       RISK_METRICS_PORT, see risk_tasks/exporter.py)
    healthcheck.py worker ROLE         /health answers 200, and this container's worker,
                                       ``ROLE@<hostname>``, answers a Celery ping
    healthcheck.py beat [FILE]         /health answers 200, and beat wrote its schedule
                                       file within --max-age seconds
    healthcheck.py broker              the broker answers PING (processes without /health)
    healthcheck.py http URL            URL answers 200 (Flower's /healthcheck)

Exit status 0 is healthy and 1 unhealthy (Docker's contract); one line on stdout says
why, which ``docker inspect`` shows. Nothing here is secret: the broker URL comes from
``RISK_BROKER_URL`` like every other process of the engine, and is never printed.

Why these checks:

- ``/health`` is served by the process itself (its main process, for a prefork worker)
  and answers 200 only when Redis (state and broker) answers it: a container whose
  process died, hangs or lost Redis is reported.
- The worker's ping travels through the broker to the worker's own control queue and
  back, so a worker whose consumer loop is stuck is reported too, not only one whose
  HTTP thread is. ``riskctl worker ROLE`` names its node ``ROLE@%h`` and a container's
  hostname is its id, so every replica checks itself and only itself. The ping uses a
  bare Celery app configured from ``celeryconfig`` (no task modules imported), so a
  check costs a fraction of a second of CPU.
- Beat writes its schedule file whenever it has sent tasks and 3 minutes have passed
  (Celery's ``Scheduler.sync_every``); with a tick every second, a file older than
  5 minutes means beat is stuck.
"""

from __future__ import annotations

import argparse
import glob
import os
import socket
import sys
import time
import urllib.error
import urllib.request

DEFAULT_BROKER = "redis://127.0.0.1:6379/0"
DEFAULT_METRICS_PORT = "9808"
ROLES = ("pretrade", "monitor", "actions", "ops")


def check_health_endpoint(timeout: float) -> tuple[bool, str]:
    """``GET http://127.0.0.1:$RISK_METRICS_PORT/health``; 0 (endpoint off) falls back
    to the broker's PING."""
    port = os.environ.get("RISK_METRICS_PORT", DEFAULT_METRICS_PORT).strip() or "0"
    if port == "0":
        return check_broker(timeout)
    return check_http(f"http://127.0.0.1:{port}/health", timeout)


def check_broker(timeout: float) -> tuple[bool, str]:
    import redis

    url = os.environ.get("RISK_BROKER_URL", DEFAULT_BROKER)
    try:
        client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        try:
            client.ping()
        finally:
            client.close()
    except redis.RedisError as exc:
        return False, f"broker unreachable: {type(exc).__name__}"
    return True, "broker answers"


def check_worker(role: str, timeout: float, node: str | None = None) -> tuple[bool, str]:
    from celery import Celery

    node = node or f"{role}@{socket.gethostname()}"
    app = Celery("risk-healthcheck", set_as_current=False)
    app.config_from_object("celeryconfig")
    try:
        replies = app.control.ping(destination=[node], timeout=timeout)
    except Exception as exc:  # noqa: BLE001 - any failure to ask is "unhealthy", with its name
        return False, f"{node}: cannot ask ({type(exc).__name__})"
    finally:
        app.close()
    if any(node in reply for reply in replies):
        return True, f"{node} answers"
    return False, f"{node} did not answer within {timeout} s"


def check_beat(schedule: str, max_age: float) -> tuple[bool, str]:
    # The shelve behind the schedule may add a suffix (.db, .dat) depending on the dbm.
    files = [f for f in glob.glob(glob.escape(schedule) + "*") if os.path.isfile(f)]
    if not files:
        return False, f"no schedule file {schedule}*"
    age = time.time() - max(os.path.getmtime(f) for f in files)
    if age > max_age:
        return False, f"schedule file not written for {age:.0f} s"
    return True, f"schedule file written {age:.0f} s ago"


def check_http(url: str, timeout: float) -> tuple[bool, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - local URL
            status = response.status
    except urllib.error.HTTPError as exc:
        return False, f"{url}: HTTP {exc.code}"
    except OSError as exc:
        return False, f"{url}: {type(exc).__name__}"
    return status == 200, f"{url}: HTTP {status}"


def both(*checks) -> tuple[bool, str]:  # noqa: ANN002
    """Run checks in order; the first failure is the verdict, else all reasons."""
    reasons = []
    for check in checks:
        ok, why = check()
        if not ok:
            return False, why
        reasons.append(why)
    return True, "; ".join(reasons)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for an answer")
    sub = p.add_subparsers(dest="mode")
    sub.add_parser("health", help="this container's /health answers 200 (the default)")
    worker = sub.add_parser("worker", help="/health, and this container's worker answers a ping")
    worker.add_argument("role", choices=ROLES)
    worker.add_argument("--node", default=None, help="node name (default ROLE@hostname)")
    beat = sub.add_parser("beat", help="/health, and beat's schedule file is fresh")
    beat.add_argument("schedule", nargs="?", default="var/celerybeat-schedule")
    beat.add_argument("--max-age", type=float, default=300.0, help="seconds")
    sub.add_parser("broker", help="the broker answers PING")
    http = sub.add_parser("http", help="a URL answers 200")
    http.add_argument("url")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    health = lambda: check_health_endpoint(args.timeout)  # noqa: E731
    if args.mode == "worker":
        ok, why = both(health, lambda: check_worker(args.role, args.timeout, args.node))
    elif args.mode == "beat":
        ok, why = both(lambda: check_beat(args.schedule, args.max_age), health)
    elif args.mode == "broker":
        ok, why = check_broker(args.timeout)
    elif args.mode == "http":
        ok, why = check_http(args.url, args.timeout)
    else:
        ok, why = health()
    print(("healthy: " if ok else "unhealthy: ") + why)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
