"""One measured fix to kombu's Redis transport, applied when the app is imported.

kombu 5.7's ``Channel.conn_or_acquire`` builds a new ``redis.Redis`` object for every
publish, ack and fanout (event) message. The object is only a wrapper around the
channel's connection pool, but building one sets up redis-py's ~170 response callbacks:
about a quarter of a millisecond on these machines, paid by every ``send_task`` of a
caller and several times per task in a worker (profiled: 0.46 ms per task under
cProfile). The client is stateless apart from its pool, so one per channel and pool is
reused; a channel that replaces its pool (after a connection error) gets a new one.
"""

from __future__ import annotations

from contextlib import contextmanager

import redis

from kombu.transport import redis as kombu_redis

_ATTR = "_risk_cached_client"


@contextmanager
def _conn_or_acquire(self, client=None):  # noqa: ANN001, ANN202 - kombu's signature
    if client:
        yield client
        return
    if self.connection is None:
        # A channel closed by a lost connection. Say so as a connection error, which
        # kombu's ``ensure`` answers by reconnecting and reviving the producer (building
        # a pool here would fail with an AttributeError that nothing retries, and a
        # publisher such as beat would stay stuck on the dead channel).
        raise redis.exceptions.ConnectionError("the broker channel is closed")
    cached = self.__dict__.get(_ATTR)
    if cached is None or cached.connection_pool is not self.pool:
        cached = self._create_client()
        self.__dict__[_ATTR] = cached
    yield cached


def apply() -> None:
    if getattr(kombu_redis.Channel.conn_or_acquire, "_risk_patched", False):
        return
    _conn_or_acquire._risk_patched = True  # type: ignore[attr-defined]
    kombu_redis.Channel.conn_or_acquire = _conn_or_acquire
