"""Measured fixes to kombu's Redis transport, applied when the app is imported.

**One client per channel.** kombu 5.7's ``Channel.conn_or_acquire`` builds a new
``redis.Redis`` object for every publish, ack and fanout (event) message. The object is
only a wrapper around the channel's connection pool, but building one sets up redis-py's
~170 response callbacks: about a quarter of a millisecond on these machines, paid by
every ``send_task`` of a caller and several times per task in a worker (profiled: 0.46
ms per task under cProfile). The client is stateless apart from its pool, so one per
channel and pool is reused; a channel that replaces its pool (after a connection error)
gets a new one.

**Many messages per fetch, for the action batches** (``enable_multi_fetch``, called by
``risk_tasks.batches`` on a worker that runs them). kombu takes one message per ``BRPOP``
and then records it as unacknowledged (ack emulation) in a second round trip: two round
trips and a turn of the event loop per message. A shock's thousand liquidations arrive
at once, and the batches a worker formed were one or two messages long (measured
2026-12-01: 549 of 603 batches), so the batch saved little. With it on, after a
``BRPOP`` delivers a message, one script takes up to the channel's free prefetch more
from the same queue and records each as unacknowledged *in the same step*, exactly as
kombu's ``QoS.append`` would (same index, same hash entry, the time of the fetch), so
there is no moment when such a message is neither on the queue nor recorded: a worker
killed at any point leaves each one to kombu's restore after the visibility timeout,
like any message it had received. They are then delivered one by one as kombu delivers
a message; ``QoS.append`` skips only the write the script made. If a delivery is
interrupted (a warm shutdown, a failing consumer), those not yet handed over go back to
the queue at once. A message the script cannot read (not kombu's JSON) is taken, left
unrecorded, and recorded by ``append`` as usual; one that is not JSON at all is dropped
with an error logged, as kombu's own fetch drops it with an exception.

**Envelopes read through orjson.** The transport reads each message's JSON envelope
with ``kombu.utils.json.loads`` (the standard library); ``risk_tasks.serialization.loads``
gives the same values (it hands anything orjson might read differently to kombu's
decoder) in 9 instead of 23 us for a check's 1 kB message.

**A batch's acknowledgements in one round trip** (``ack_all``): ack emulation removes
each message from the unacknowledged index and hash; a batch does it for all of its
messages in one pipeline, then does kombu's bookkeeping of each.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from time import time
from typing import Any, Sequence

import kombu
import redis
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.encoding import bytes_to_str

from risk_tasks.serialization import loads  # kombu.utils.json.loads, through orjson

log = logging.getLogger(__name__)

_ATTR = "_risk_cached_client"
_RECORDED = "_risk_recorded"  # on a QoS: delivery tags the multi-fetch script recorded
_multi_fetch: set[str] = set()  # the queues taken many messages at a time


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


# -- MANY MESSAGES PER FETCH --

_TAKE = """
-- KEYS: 1 the queue's list (as BRPOP named it), 2 unacked index, 3 unacked hash
-- ARGV: 1 how many at most, 2 the time to record
-- Returns {message, recorded (1/0), ...}: up to ARGV[1] messages taken from the list's
-- consuming end (as BRPOP), each recorded as kombu's QoS.append records it.
local out = {}
for i = 1, tonumber(ARGV[1]) do
  local raw = redis.call('RPOP', KEYS[1])
  if not raw then break end
  local recorded = 0
  local ok, m = pcall(cjson.decode, raw)
  if ok and type(m) == 'table' and type(m.properties) == 'table' then
    local tag = m.properties.delivery_tag
    local info = m.properties.delivery_info
    if type(tag) == 'string' and type(info) == 'table'
        and type(info.exchange) == 'string' and type(info.routing_key) == 'string' then
      redis.call('ZADD', KEYS[2], ARGV[2], tag)
      redis.call('HSET', KEYS[3], tag, '[' .. raw .. ',' .. cjson.encode(info.exchange) ..
                 ',' .. cjson.encode(info.routing_key) .. ']')
      recorded = 1
    end
  end
  out[#out + 1] = raw
  out[#out + 1] = recorded
end
return out
"""


def enable_multi_fetch(queue: str) -> None:
    """Take many messages per fetch from ``queue`` in this process (see the module
    docstring). Only for a queue whose messages are buffered and run as batches: a task
    run as it arrives (the solo pool runs it inside the fetch) would hold the rest of
    what was taken, which other workers could have run meanwhile."""
    _multi_fetch.add(queue)


def _brpop_read(self, **options):  # noqa: ANN001, ANN202 - kombu 5.7's, plus _take_more
    try:
        try:
            dest__item = self.client.parse_response(self.client.connection, "BRPOP",
                                                    **options)
        except self.connection_errors:
            # if there's a ConnectionError, disconnect so the next
            # iteration will reconnect automatically.
            self.client.connection.disconnect()
            raise
        if dest__item:
            raw_dest, item = dest__item
            dest = bytes_to_str(raw_dest).rsplit(self.sep, 1)[0]
            self._queue_cycle.rotate(dest)
            self.connection._deliver(loads(bytes_to_str(item)), dest)
            if dest in _multi_fetch:
                _take_more(self, raw_dest, dest)
            return True
        else:
            raise kombu_redis.Empty()
    finally:
        self._in_poll = None
        self._flush_brpop_reauth()


def _take_more(channel, raw_dest: bytes, dest: str) -> None:  # noqa: ANN001
    """After a BRPOP's message: up to the free prefetch more from the same list, taken and
    recorded as unacknowledged in one step, then delivered one by one."""
    qos = channel.qos
    if not channel.ack_emulation or type(qos) is not kombu_redis.QoS \
            or channel.global_keyprefix or dest not in channel.connection._callbacks:
        return
    room = qos.can_consume_max_estimate() if qos.prefetch_count else 0
    if room <= 0:
        return
    with channel.conn_or_acquire() as client:
        script = channel.__dict__.get("_risk_take")
        if script is None or script.registered_client is not client:
            script = channel.__dict__["_risk_take"] = client.register_script(_TAKE)
        reply = script(keys=[raw_dest, qos.unacked_index_key, qos.unacked_key],
                       args=[room, time()])
    recorded = qos.__dict__.setdefault(_RECORDED, set())
    payloads = []
    for i in range(0, len(reply), 2):
        try:
            payload = loads(bytes_to_str(reply[i]))
        except ValueError:  # kombu's BRPOP path loses such a message with an exception
            log.error("dropped an unreadable message from queue %s: %.200r", dest, reply[i])
            continue
        tag = payload["properties"]["delivery_tag"] if reply[i + 1] else None
        if tag is not None:
            recorded.add(tag)
        payloads.append((payload, tag))
    for n, (payload, _) in enumerate(payloads):
        try:
            channel.connection._deliver(payload, dest)
        except BaseException:
            # Interrupted (a warm shutdown's exception, a failing consumer): what was
            # taken and not yet delivered goes back to the queue now, rather than after
            # the visibility timeout.
            _give_back(qos, [tag for _, tag in payloads[n + 1:] if tag is not None])
            raise


def _give_back(qos, tags: list[str]) -> None:  # noqa: ANN001
    recorded = qos.__dict__.get(_RECORDED, set())
    for tag in tags:
        recorded.discard(tag)
        try:
            qos.restore_by_tag(tag, leftmost=True)
        except Exception:  # noqa: BLE001 - it stays recorded: restored after the timeout
            log.exception("could not give back message %s; it is restored after the "
                          "visibility timeout", tag)


def _append(self, message, delivery_tag):  # noqa: ANN001, ANN202 - kombu's signature
    recorded = self.__dict__.get(_RECORDED)
    if recorded and delivery_tag in recorded:
        recorded.discard(delivery_tag)
        virtual.QoS.append(self, message, delivery_tag)  # recorded in Redis already
        return
    _kombu_append(self, message, delivery_tag)


_kombu_append = kombu_redis.QoS.append


# -- A BATCH'S ACKNOWLEDGEMENTS --

def ack_all(messages: Sequence[Any]) -> None:
    """Acknowledge ``messages`` (kombu messages of one channel, not yet acknowledged): in
    one pipelined round trip with Redis ack emulation, else one by one. Raises what the
    broker raises (a message not acknowledged is delivered again later)."""
    if not messages:
        return
    channel = messages[0].channel
    qos = getattr(channel, "qos", None)
    if type(qos) is not kombu_redis.QoS or any(m.channel is not channel for m in messages) \
            or channel.no_ack_consumers:
        for message in messages:
            message.ack()
        return
    with channel.conn_or_acquire() as client:
        pipe = client.pipeline()
        for message in messages:
            qos._remove_from_indices(message.delivery_tag, pipe)
        pipe.execute()
    for message in messages:
        virtual.QoS.ack(qos, message.delivery_tag)
        message._state = "ACK"


def apply() -> None:
    if getattr(kombu_redis.Channel.conn_or_acquire, "_risk_patched", False):
        return
    _conn_or_acquire._risk_patched = True  # type: ignore[attr-defined]
    kombu_redis.Channel.conn_or_acquire = _conn_or_acquire
    if kombu.__version__.startswith("5.7."):  # _brpop_read is kombu 5.7's own, extended
        kombu_redis.Channel._brpop_read = _brpop_read
        kombu_redis.QoS.append = _append
    else:  # pragma: no cover - the pin is kombu 5.7
        log.warning("kombu %s: one message per fetch (the multi-fetch patch is for 5.7)",
                    kombu.__version__)
