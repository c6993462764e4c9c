"""The Redis result backend, without one read per result on the pre-trade path.

Celery's backend reads a task's stored result before writing it (``_store_result``), so
that a redelivered task cannot overwrite a success. That is one more Redis round trip
for every result. The pre-trade tasks are at-most-once (no redelivery) and idempotent
by ``order_id`` (a repeated check returns the first decision), so for them the read
guards nothing; every other task keeps Celery's behaviour.

Every result is written with ``SET ... EX`` and its ``PUBLISH`` in one pipelined round
trip without ``MULTI``/``EXEC`` (Celery wraps them in a transaction and calls redis-py's
deprecated ``setex``, whose deprecation warning machinery runs on every result). The
stored value and the message published are Celery's own.

The pre-trade fast path (``risk_tasks.fastpath``) stores a success with
``store_plain_success``: the same document Celery would store, built without Celery's
per-call lookups and encoded with orjson. Encoding a decision with the standard
library's JSON and building its metadata cost the pretrade worker about as much CPU as
the check itself (py-spy at saturation, 2026-12-01).

A check that is decided and committed in the backend's Redis server can store its own
success in the same round trip as its commit (``success_target``, used by the fast path
and ``risk_tasks.pretrade``): the commit script writes and publishes the same document,
in the backend's database, once the decision is recorded. The caller's answer is then
never visible before the decision it reports is stored, and the worker spends one round
trip fewer per check.

Selected in ``celeryconfig.py`` as ``risk_tasks.result_backend.RiskRedisBackend+redis://...``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import orjson
import redis
from celery import states
from celery.backends.redis import RedisBackend
from celery.exceptions import BackendStoreError
from kombu.utils.encoding import bytes_to_str

NO_READ_BEFORE_WRITE = frozenset({
    "risk.check_order", "risk.check_order_batch", "risk.get_risk_metrics", "risk.ping",
})


def redis_server(client: redis.Redis) -> str:
    """Which Redis server a client talks to, with which credentials (its database
    aside), as a digest: two clients with the same one may run each other's writes (a
    script of one may write the other's keys), and the credentials are not kept."""
    kwargs = client.connection_pool.connection_kwargs
    identity = repr(tuple(kwargs.get(k) for k in ("host", "port", "path", "username",
                                                  "password")))
    return hashlib.sha256(identity.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class SuccessTarget:
    """Where one task's success goes, for a script on the same server that stores it."""

    task_id: str
    key: bytes
    db: int
    expires: int  # seconds
    server: str  # redis_server() of the backend's client
    backend: "RiskRedisBackend"

    def document(self, result_json: bytes) -> bytes:
        return self.backend.success_document(self.task_id, result_json)

    def around(self) -> tuple[bytes, bytes]:
        """What comes before and after the result's JSON in its document."""
        return self.backend.success_document_around(self.task_id)


class RiskRedisBackend(RedisBackend):
    @cached_property
    def _extended(self) -> bool:
        """``result_extended``, looked up once (a per-call lookup is what the fast write
        saves)."""
        return bool(self.app.conf.find_value_for_key("extended", "result"))

    def store_plain_success(self, task_id: str, result: Any) -> None:
        """Store (and publish) the success of a plain pre-trade call: what
        ``store_result(task_id, result, SUCCESS)`` stores for a call with no parent,
        group or children, as compact JSON. With ``result_extended`` on (which adds the
        request's fields) it is ``store_result`` itself. A result orjson cannot encode
        goes through Celery's encoder; orjson writes a non-finite float as ``null``
        (decisions carry none: every figure is a float of a bounded ``Decimal``)."""
        if self._extended:
            self.store_result(task_id, result, states.SUCCESS)
            return
        try:
            value = self.success_document(task_id, orjson.dumps(result))
        except TypeError:
            value = self.encode({"status": states.SUCCESS, "result": result, "traceback": None,
                                 "children": [], "date_done": self.app.now().isoformat(),
                                 "task_id": task_id})
        self.set(self.get_key_for_task(task_id), value)

    def success_document(self, task_id: str, result_json: bytes) -> bytes:
        """The stored document of a plain success whose result encodes as
        ``result_json``: byte for byte what orjson makes of Celery's document."""
        head, tail = self.success_document_around(task_id)
        return head + result_json + tail

    def success_document_around(self, task_id: str) -> tuple[bytes, bytes]:
        """``success_document`` without its result: the bytes before and after it."""
        return (b'{"status":"SUCCESS","result":',
                b',"traceback":null,"children":[],"date_done":"'
                + self.app.now().isoformat().encode() + b'","task_id":'
                + orjson.dumps(task_id) + b"}")

    def success_target(self, task_id: str) -> SuccessTarget | None:
        """Where ``task_id``'s plain success is stored, for a script that stores it
        itself; None when results are extended or kept forever (the document or its
        write would differ)."""
        if self._extended or not self.expires:
            return None
        return SuccessTarget(task_id, self.get_key_for_task(task_id), self._db,
                             int(self.expires), self._server, self)

    @cached_property
    def _server(self) -> str:
        return redis_server(self.client)

    @cached_property
    def _db(self) -> int:
        return int(self.client.connection_pool.connection_kwargs.get("db") or 0)

    def _set(self, key, value, expires=None):  # noqa: ANN001, ANN202
        if expires is None:
            expires = self.expires
        pipe = self.client.pipeline(transaction=False)
        if expires:
            pipe.set(key, value, ex=expires)
        else:
            pipe.set(key, value)
        pipe.publish(key, value)
        pipe.execute()

    def _store_result(self, task_id, result, state, traceback=None, request=None,  # noqa: ANN001, ANN201
                      **kwargs):
        if state != states.SUCCESS or getattr(request, "task", None) not in NO_READ_BEFORE_WRITE:
            return super()._store_result(task_id, result, state, traceback=traceback,
                                         request=request, **kwargs)
        meta = self._get_result_meta(result=result, state=state, traceback=traceback,
                                     request=request)
        meta["task_id"] = bytes_to_str(task_id)
        try:
            self._set_with_state(self.get_key_for_task(task_id), self.encode(meta), state)
        except BackendStoreError as exc:
            raise BackendStoreError(str(exc), state=state, task_id=task_id) from exc
        return result
