"""Messages waiting in the broker, read straight from Redis without consuming them.

kombu's Redis transport keeps queue ``q`` as the Redis list ``q`` in the broker database
(messages with a priority above 0 go to ``q\\x06\\x16<n>``); each item is a JSON envelope
whose ``headers`` carry the task name and id and whose ``body`` is base64 JSON of
``[args, kwargs, embed]``. Tests use this to see what a worker *enqueued* for a queue
nobody consumes (for example what the monitor sent to ``liquidation``), so nothing is
taken off the queue by looking.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import orjson
import redis

PRIORITY_SEP = "\x06\x16"


@dataclass(frozen=True)
class Message:
    task: str
    id: str
    args: list[Any]
    kwargs: dict[str, Any]
    headers: dict[str, Any]


def decode(raw: bytes) -> Message:
    envelope = orjson.loads(raw)
    body = envelope["body"]
    if envelope.get("properties", {}).get("body_encoding") == "base64":
        body = base64.b64decode(body)
    args, kwargs, _embed = orjson.loads(body)
    headers = envelope.get("headers") or {}
    return Message(task=headers.get("task", ""), id=headers.get("id", ""), args=list(args),
                   kwargs=dict(kwargs), headers=headers)


class BrokerQueues:
    """Read, count and purge the messages of queues in one broker database."""

    def __init__(self, broker_url: str) -> None:
        self.client = redis.Redis.from_url(broker_url)

    def _lists(self, queue: str) -> list[bytes]:
        names = [queue.encode()]
        names += sorted(self.client.scan_iter(match=f"{queue}{PRIORITY_SEP}*"))
        return names

    def messages(self, queue: str, task: str | None = None) -> list[Message]:
        """Messages waiting in ``queue``, oldest first (optionally of one task name)."""
        found: list[Message] = []
        for name in self._lists(queue):
            # LPUSH in, BRPOP out: the oldest message is at the right end.
            found += [decode(raw) for raw in reversed(self.client.lrange(name, 0, -1))]
        return [m for m in found if task is None or m.task == task]

    def count(self, queue: str) -> int:
        return sum(int(self.client.llen(name)) for name in self._lists(queue))

    def purge(self, *queues: str) -> None:
        for queue in queues:
            for name in self._lists(queue):
                self.client.delete(name)

    def close(self) -> None:
        self.client.close()
