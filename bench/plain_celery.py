"""The reference the pre-trade targets were set against: a plain Celery app with one no-op
task, tuned as in ``shared/notes/celery-baseline.md`` (solo pool, prefetch 1, rate limits
off, ack emulation off, no gossip, mingle or heartbeat, callers sending empty
``argsrepr``/``kwargsrepr``), and none of the risk engine's code or patches.

``bench/pretrade.py`` runs it on the same Redis server in the same run as the engine, so
the engine's figures can be read against what Celery itself costs on the machine at that
moment (the notes measured it on 2026-11-23; a shared machine is not always as fast).

    PLAIN_BROKER_URL=redis://... PLAIN_RESULT_BACKEND=redis://... \\
        python -m celery -A bench.plain_celery worker  (see ``worker_command``)
"""

from __future__ import annotations

import os
import sys

from celery import Celery

QUEUE = "plain"

app = Celery("plain", broker=os.environ.get("PLAIN_BROKER_URL", "redis://127.0.0.1:6379/3"),
             backend=os.environ.get("PLAIN_RESULT_BACKEND", "redis://127.0.0.1:6379/4"))
app.conf.update(
    task_serializer="json", result_serializer="json", accept_content=["json"],
    result_accept_content=["json"], task_default_queue=QUEUE, result_expires=60,
    worker_prefetch_multiplier=1, worker_disable_rate_limits=True,
    broker_transport_options={"ack_emulation": False}, worker_hijack_root_logger=False)


@app.task(name="plain.noop")
def noop() -> str:
    return "pong"


def call() -> str:
    """One round trip, as the notes' client made it."""
    return app.send_task("plain.noop", argsrepr="", kwargsrepr="").get(timeout=5, interval=0.001)


def worker_command() -> list[str]:
    return [sys.executable, "-m", "celery", "-A", "bench.plain_celery", "worker", "-P", "solo",
            "-Q", QUEUE, "-n", "bench-plain@%h", "-l", "warning", "--without-gossip",
            "--without-mingle", "--without-heartbeat"]
