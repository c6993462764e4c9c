"""Worker roles: which queues each kind of worker consumes and how it is tuned.

One place for the command lines that ``riskctl worker``, ``riskctl run``,
docker-compose and the tests start, so they cannot drift apart.

- ``pretrade`` (``pretrade,control``): the hot path. Solo pool (no pipe hop), prefetch
  1, no gossip/mingle/heartbeat, and at-most-once delivery (ack emulation off): a check
  that is lost fails closed at the caller and is retried under the same order id.
  Scale it with more processes (containers), not with a bigger pool.
- ``monitor`` (``monitor,shards``): the 1 s sweep. Prefork, one process per core; every
  process can take any shard.
- ``actions`` (``liquidation,unwind``): liquidations and unwinds, acks_late with
  redelivery when a worker dies. Solo pool, one process per worker: a prefork parent
  spends more CPU passing each task to a child and back than a paper liquidation takes
  (5.5 to 7 ms of worker CPU per paper liquidation in prefork against 3.4 to 5.2 ms
  solo, measured with ``bench/liquidation.py``), and a market-wide shock sends a
  thousand at once. Scale it with more processes (about 1.5 per core: a solo worker waits
  on Redis for part of every batch). The solo pool enforces no time limit: what bounds
  a task is every socket's timeout (Redis, the HTTP gateway), the bounded loops of the
  actions, and, for a worker that hangs anyway, the broker's visibility timeout with the
  per-account lease (its message goes to another worker, which takes over once the lease
  lapses). Liquidation messages received together run as one batch
  (``risk_tasks.batches``), so its prefetch is ``RISK_ACTION_BATCH_SIZE``.
- ``ops`` (``ingest,alerts,reports,dead_letter``): the rest that changes state and must
  not be lost: acks_late with redelivery when a worker dies; prefork, so reports and
  webhooks keep their time limits.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from risk_tasks.settings import Settings


@dataclass(frozen=True)
class WorkerRole:
    queues: str
    pool: str
    concurrency: int
    env: dict[str, str] = field(default_factory=dict)
    flags: tuple[str, ...] = ()
    loglevel: str = "info"
    batches: bool = False
    """Runs action batches (``risk_tasks.batches``): its prefetch is the batch size."""


# In start order (``riskctl run`` gives each its metrics port in this order).
ROLES: dict[str, WorkerRole] = {
    "pretrade": WorkerRole(
        queues="pretrade,control", pool="solo", concurrency=1,
        env={"RISK_BROKER_ACK_EMULATION": "0"},
        flags=("--without-gossip", "--without-mingle", "--without-heartbeat"),
        # Celery logs every task at INFO; on the hot path that is a write per check.
        loglevel="warning",
    ),
    "monitor": WorkerRole(queues="monitor,shards", pool="prefork", concurrency=2,
                          flags=("--without-gossip", "--without-mingle")),
    "actions": WorkerRole(
        queues="liquidation,unwind", pool="solo", concurrency=1,
        flags=("--without-gossip", "--without-mingle"),
        # Each action logs its start, steps and end itself; Celery's INFO line per task
        # received and succeeded is a write per liquidation in a shock.
        loglevel="warning", batches=True,
    ),
    "ops": WorkerRole(queues="ingest,alerts,reports,dead_letter",
                      pool="prefork", concurrency=2,
                      flags=("--without-gossip", "--without-mingle")),
}


def worker_command(role: str, name: str | None = None, concurrency: int | None = None,
                   python: str | None = None, settings: "Settings | None" = None) -> list[str]:
    """The ``celery worker`` command line of a role (``settings``: the process's)."""
    spec = ROLES[role]
    flags = spec.flags
    if spec.batches:
        # A batch is what the worker has received (``risk_tasks.batches``): its prefetch.
        from risk_tasks.settings import get_settings

        batch = (settings or get_settings()).action_batch
        flags += (f"--prefetch-multiplier={batch}",)
    return [
        python or sys.executable, "-m", "celery", "-A", "risk_tasks", "worker",
        "-P", spec.pool, "-c", str(concurrency or spec.concurrency), "-Q", spec.queues,
        "-n", f"{name or role}@%h", "-l", spec.loglevel, *flags,
    ]


def beat_command(python: str | None = None, schedule_file: str = "var/celerybeat-schedule") -> list[str]:
    return [python or sys.executable, "-m", "celery", "-A", "risk_tasks", "beat",
            "-s", schedule_file, "-l", "info"]


def flower_command(port: int = 5555, address: str = "127.0.0.1",
                   python: str | None = None) -> list[str]:
    """The ``celery flower`` command line. Its credentials are not on it (``ps`` would
    show them): Flower reads ``FLOWER_BASIC_AUTH=user:password`` from its environment."""
    return [python or sys.executable, "-m", "celery", "-A", "risk_tasks", "flower",
            f"--address={address}", f"--port={port}"]
