"""What ``riskctl status`` shows: workers, queue depths, last tick, backlog, feed."""

from __future__ import annotations

import time
from typing import Any

import redis

from celeryconfig import QUEUES
from risk_tasks.settings import client_url

# kombu's Redis transport keeps priorities 0-9 in four lists per queue.
_PRIORITY_SUFFIXES = ("", "\x06\x163", "\x06\x166", "\x06\x169")


def queue_depths(broker_url: str) -> dict[str, int]:
    client = redis.Redis.from_url(client_url(broker_url), socket_timeout=3)
    pipe = client.pipeline(transaction=False)
    for queue in QUEUES:
        for suffix in _PRIORITY_SUFFIXES:
            pipe.llen(queue + suffix)
    counts = pipe.execute()
    client.close()
    n = len(_PRIORITY_SUFFIXES)
    return {q: sum(counts[i * n:(i + 1) * n]) for i, q in enumerate(QUEUES)}


def system_status(rt, app, timeout: float = 1.0) -> dict[str, Any]:  # noqa: ANN001
    inspect = app.control.inspect(timeout=timeout)
    active = inspect.active_queues() or {}
    workers = {name: sorted(q["name"] for q in queues) for name, queues in active.items()}
    tick = {k.decode(): v.decode() for k, v in rt.redis.hgetall("risk:monitor:last").items()}
    feed = rt.store.feed_status()
    now = time.time()
    feed_age = None if feed["last_ts"] is None else round(now - feed["last_ts"], 1)
    return {
        "workers": workers,
        "queues": queue_depths(rt.settings.broker_url),
        "last_tick": tick,
        "backlog": rt.drainer.backlog(),
        "feed": {"last_price_age_s": feed_age},
    }
