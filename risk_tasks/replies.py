"""Results of one client's tasks, pushed to it over one pattern subscription.

Celery's Redis result backend answers ``AsyncResult.get`` by subscribing to the task's
result channel before sending, polling for the message, and unsubscribing after: two
more Redis commands and a polling loop for every call, and CPU the caller spends on the
same two cores as the worker and Redis. A ``Replies`` instead gives every task id it
hands out one prefix of its own, subscribes once to the pattern of their result channels
(``PSUBSCRIBE celery-task-meta-<prefix>-*``), and one reader thread hands each result to
the caller waiting for it. The worker stores and publishes results as always (the result
key and the channel of that key); nothing on the worker's side changes.

Nothing is missed across a lost connection: the reader subscribes again (or redis-py
does, by itself), and once the subscription is confirmed it reads the stored result of
every call still waiting (``MGET`` of their keys). A result stored before that read is found by it; one stored after
is published to the new subscription. A caller that gives up first (its timeout) is
forgotten, and its late result is dropped.
"""

from __future__ import annotations

import itertools
import logging
import threading
import uuid
from concurrent.futures import Future, InvalidStateError
from typing import Any

import redis
from celery import Celery, states

log = logging.getLogger(__name__)

RECONNECT_PAUSE = (0.05, 1.0)  # seconds: first and longest pause between attempts


class Replies:
    def __init__(self, app: Celery, start: bool = True) -> None:
        self.backend = app.backend
        self.client: redis.Redis = self.backend.client
        self.prefix = uuid.uuid4().hex
        self.pattern = self.key(f"{self.prefix}-*")
        self.channel_prefix = self.key("x")[:-1]  # what precedes a task id in its channel
        self._ids = itertools.count(1)
        self._waiting: dict[str, Future] = {}
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._closed = threading.Event()
        self._pubsub: Any = None
        self._thread = threading.Thread(target=self._run, name="risk-client-replies",
                                        daemon=True)
        if start:
            self._thread.start()

    def start(self) -> None:
        """Start listening (when made with ``start=False``)."""
        self._thread.start()

    def key(self, task_id: str) -> str:
        key = self.backend.get_key_for_task(task_id)
        return key.decode() if isinstance(key, bytes) else key

    # -- CALLERS --

    def expect(self) -> tuple[str, Future]:
        """A new task id of this client and the future its result will resolve."""
        task_id = f"{self.prefix}-{next(self._ids)}"
        future: Future = Future()
        with self._lock:
            self._waiting[task_id] = future
        return task_id, future

    def forget(self, task_id: str) -> None:
        with self._lock:
            self._waiting.pop(task_id, None)

    def wait_ready(self, timeout: float) -> bool:
        """True once the subscription is in place (results cannot be missed after it)."""
        return self._ready.wait(timeout)

    def close(self) -> None:
        self._closed.set()
        pubsub = self._pubsub
        if pubsub is not None:
            try:
                pubsub.close()  # wakes the reader
            except Exception:  # noqa: BLE001 - closing anyway
                pass
        if self._thread.is_alive():
            self._thread.join(timeout=2)

    # -- THE READER --

    def _run(self) -> None:
        pause = RECONNECT_PAUSE[0]
        while not self._closed.is_set():
            pubsub = self.client.pubsub()
            self._pubsub = pubsub
            try:
                pubsub.psubscribe(self.pattern)
                self._await_confirmation(pubsub)
                self._ready.set()
                pause = RECONNECT_PAUSE[0]
                self._catch_up()
                while not self._closed.is_set():
                    message = pubsub.get_message(timeout=1.0)
                    if message is None:
                        continue
                    if message["type"] == "pmessage":
                        self._deliver(message["channel"], message["data"])
                    elif message["type"] == "psubscribe":
                        # redis-py reconnected by itself and subscribed again: what was
                        # published in between is only in the stored results
                        self._catch_up()
            except Exception as exc:  # noqa: BLE001 - any failure: subscribe again
                self._ready.clear()
                if self._closed.is_set():
                    break
                log.warning("result subscription lost (%s: %s); subscribing again",
                            exc.__class__.__name__, exc)
                self._closed.wait(pause)
                pause = min(pause * 2, RECONNECT_PAUSE[1])
            finally:
                try:
                    pubsub.close()
                except Exception:  # noqa: BLE001
                    pass
        self._ready.clear()

    def _await_confirmation(self, pubsub: Any) -> None:
        while not self._closed.is_set():
            message = pubsub.get_message(timeout=1.0)
            if message is not None and message["type"] == "psubscribe":
                return

    def _catch_up(self) -> None:
        """Results stored while there was no subscription: read them."""
        with self._lock:
            task_ids = list(self._waiting)
        if not task_ids:
            return
        stored = self.client.mget([self.key(t) for t in task_ids])
        for task_id, raw in zip(task_ids, stored):
            if raw is not None:
                self._resolve(task_id, raw)

    def _deliver(self, channel: bytes | str, data: bytes) -> None:
        channel = channel.decode() if isinstance(channel, bytes) else channel
        task_id = channel[len(self.channel_prefix):]
        self._resolve(task_id, data)

    def _resolve(self, task_id: str, raw: bytes) -> None:
        try:
            meta = self.backend.decode(raw)
        except Exception:  # noqa: BLE001 - an undecodable result: the caller times out
            log.exception("undecodable result for task %s", task_id)
            return
        if meta.get("status") not in states.READY_STATES:
            return
        with self._lock:
            future = self._waiting.pop(task_id, None)
        if future is None:
            return  # its caller gave up already
        try:
            future.set_result(meta)
        except InvalidStateError:
            pass
