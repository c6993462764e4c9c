"""The client a trading service uses to ask for pre-trade decisions.

    from risk_tasks.client import RiskClient

    risk = RiskClient(timeout=0.25)            # seconds
    decision = risk.check_order({...})
    if not decision["approved"]:
        reject(decision["rejection_reason"])   # "risk_timeout" when the engine was silent

It fails closed: when no decision arrives within the timeout the answer is a rejection
with ``rejection_reason="risk_timeout"`` (``"risk_unavailable"`` when the broker cannot
be reached or does not answer), which a caller can tell apart from the engine's own
reasons. The message carries the same timeout as its expiry, so a worker never decides
a check that its caller has already given up on. Retrying with the same ``order_id`` is
safe: the engine answers a repeated order id with its first decision.

``RiskClient(coalesce=True)`` sends the concurrent ``check_order`` calls of one process
as batches (``risk.check_order_batch``): one message per batch instead of one per order,
which is how one process goes past a thousand checks per second. Callers see no change.
A batch leaves after ``window`` seconds (0.5 ms) or at ``max_batch`` orders; at most
``max_in_flight`` batches (2) are outstanding, and orders that arrive while they are join
the next batch, so batches grow with the load instead of queueing up in the broker.
Fewer, larger batches cost the workers less per order: with 2 outstanding instead of 4,
two saturated client processes decided 17 to 28 % more orders per second here, with one
pretrade worker or two (README, *Benchmarks*). Raise it for a client process that alone
must keep more than two workers busy.

Results come back over one pattern subscription per client (``risk_tasks.replies``),
not Celery's subscribe-poll-unsubscribe per call. Messages are built from one made by
Celery per task name and pushed onto the queue with one ``LPUSH`` on the client's own
connection to the broker (``risk_tasks.app.DirectSender``), not through kombu's
producer: 0.22 to 0.24 instead of 0.49 to 0.50 ms of the caller's CPU per check
(``direct=False`` sends every call through kombu's producer). The messages and the
stored results are Celery's own, so any Celery client can call the same tasks.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import queue
import threading
import time
from concurrent.futures import Future, InvalidStateError
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Sequence

import redis
from celery import Celery, states
from celery.exceptions import TimeoutError as CeleryTimeout

from risk_tasks.app import DirectSender, TaskSender
from risk_tasks.replies import Replies

TIMEOUT_REASON = "risk_timeout"
DIRECT_RETRY_PAUSE = 0.05  # seconds between attempts to publish while the broker is away
UNAVAILABLE_REASON = "risk_unavailable"


def fail_closed(order: Any, reason: str, message: str, started: float) -> dict[str, Any]:
    """A rejection made by the client itself, never by the engine."""
    ids = order if isinstance(order, dict) else {}
    return {
        "order_id": ids.get("order_id"),
        "account_id": ids.get("account_id"),
        "approved": False,
        "violations": [message],
        "rejection_reason": reason,
        "message": message,
        "post_trade_metrics": {},
        "processing_time_us": int((time.perf_counter() - started) * 1e6),
        "client_side": True,
    }


def _resolve(future: Future, value: Any) -> None:
    """Give a waiting caller its answer (a caller that already timed out cancelled it)."""
    try:
        future.set_result(value)
    except InvalidStateError:
        pass


class RiskClient:
    def __init__(self, app: Celery | None = None, timeout: float = 1.0, coalesce: bool = False,
                 window: float = 0.0005, max_batch: int = 200, max_in_flight: int = 2,
                 direct: bool = True) -> None:
        if app is None:
            from risk_tasks.app import app as default_app

            app = default_app
        self.app = app
        self.timeout = timeout
        self.coalesce = coalesce
        self.window = window
        self.max_batch = max_batch
        self._pending: queue.SimpleQueue[tuple[Any, Future, float] | None] = queue.SimpleQueue()
        self._dispatcher: threading.Thread | None = None
        self._slots = threading.BoundedSemaphore(max_in_flight)
        self._closed = False
        self._replies: Replies | None = None
        self._setup_lock = threading.Lock()
        self._senders: dict[str, DirectSender | None] = {}
        # the direct sends' Redis client; False: every call through kombu's producer
        self._broker: Any = None if direct else False
        if coalesce:
            self._deadlines = Deadlines()
            self._dispatcher = threading.Thread(target=self._dispatch, name="risk-client-batch",
                                                daemon=True)
            self._dispatcher.start()

    # -- PUBLIC --

    def check_order(self, order: dict, timeout: float | None = None) -> dict[str, Any]:
        """The decision for one order, or a fail-closed rejection after ``timeout`` s."""
        timeout = self.timeout if timeout is None else timeout
        started = time.perf_counter()
        if self.coalesce:
            future: Future = Future()
            self._pending.put((order, future, started))
            try:
                return future.result(timeout=timeout)
            except FutureTimeout:
                future.cancel()  # still queued: it will not be sent
                return fail_closed(order, TIMEOUT_REASON,
                                   f"no risk decision within {timeout * 1000:.0f} ms", started)
        return self._call("risk.check_order", [order], timeout, started,
                          lambda msg, reason: fail_closed(order, reason, msg, started))

    def check_orders(self, orders: Sequence[dict], timeout: float | None = None) -> list[dict]:
        """Decisions for many orders in one message (``risk.check_order_batch``)."""
        timeout = self.timeout if timeout is None else timeout
        started = time.perf_counter()
        return self._call("risk.check_order_batch", [list(orders)], timeout, started,
                          lambda msg, reason: [fail_closed(o, reason, msg, started)
                                               for o in orders])

    def get_risk_metrics(self, account_id: str, timeout: float | None = None) -> dict[str, Any]:
        """The account's latest metrics; raises ``celery.exceptions.TimeoutError`` when no
        answer comes within ``timeout`` and ``RuntimeError`` when the engine failed."""
        timeout = self.timeout if timeout is None else timeout
        started = time.perf_counter()

        def failed(message: str, reason: str) -> dict:
            if reason == TIMEOUT_REASON:
                raise CeleryTimeout(message)
            raise RuntimeError(message)

        return self._call("risk.get_risk_metrics", [account_id], timeout, started, failed)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._dispatcher is not None:
            self._pending.put(None)
            self._dispatcher.join(timeout=2)
        if self._replies is not None:
            self._replies.close()
        if self._broker:
            self._broker.close()
        if self.coalesce:
            self._deadlines.close()

    def __enter__(self) -> "RiskClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- INTERNALS --

    def _call(self, task: str, args: list, timeout: float, started: float, on_failure):  # noqa: ANN001, ANN202
        try:
            replies, task_id, future = self._publish(task, args, timeout, started)
        except Unavailable as exc:
            return on_failure(str(exc), UNAVAILABLE_REASON)
        remaining = timeout - (time.perf_counter() - started)
        try:
            meta = future.result(timeout=max(remaining, 0.001))
        except FutureTimeout:
            replies.forget(task_id)
            return on_failure(f"no risk decision within {timeout * 1000:.0f} ms", TIMEOUT_REASON)
        if meta["status"] == states.SUCCESS:
            return meta["result"]
        return on_failure(_engine_error(meta), UNAVAILABLE_REASON)

    def _publish(self, task: str, args: list, timeout: float,
                 started: float) -> tuple[Replies, str, Future]:
        """Send one call whose result this client's subscription resolves into the
        returned future. The message expires with the caller's patience (``timeout``
        from ``started``); publishing retries while the broker reconnects, but only for
        about that long (Celery's default policy could wait past it). Raises
        ``Unavailable`` when the call cannot be sent in time."""
        try:
            replies = self._replies_ready(timeout)
            task_id, future = replies.expect()
        except Exception as exc:  # noqa: BLE001 - the result backend is away
            raise Unavailable(f"risk engine unavailable: {exc.__class__.__name__}") from exc
        left = timeout - (time.perf_counter() - started)
        if left <= 0.001:  # the whole timeout went waiting for the result subscription
            replies.forget(task_id)
            raise Unavailable("risk engine unavailable: no result subscription")
        try:
            sender = self._direct_sender(task)
            if sender is not None:
                self._send_direct(sender, args, task_id, started + timeout)
            else:
                with self.app.producer_or_acquire() as producer:
                    TaskSender.of(self.app, task).send(
                        producer, args, "", task_id=task_id, expires=left,
                        retry_policy=_publish_retries(left), kwargsrepr="")
        except Exception as exc:  # noqa: BLE001 - any broker failure
            replies.forget(task_id)
            raise Unavailable(f"risk engine unavailable: {exc.__class__.__name__}") from exc
        return replies, task_id, future

    def _direct_sender(self, task: str) -> DirectSender | None:
        """``task``'s direct sender, or None where only kombu's producer will do."""
        if self._broker is False or not DirectSender.usable(self.app):
            return None
        try:
            return self._senders[task]
        except KeyError:
            with self._setup_lock:
                if self._broker is None:
                    # its socket timeout no longer than a call waits: a broker that
                    # hangs fails the call (once retried) instead of holding it
                    self._broker = DirectSender.broker_client(self.app, self.timeout) or False
                if self._broker is False:
                    return None
                queue = DirectSender.queue_of(self.app, task)
                sender = None if queue is None else DirectSender(self.app, task, queue)
                return self._senders.setdefault(task, sender)

    def _send_direct(self, sender: DirectSender, args: list, task_id: str,
                     deadline: float) -> None:
        """Push one call, retrying while the broker cannot be reached, until
        ``deadline`` (``time.perf_counter()``); the message expires then too."""
        while True:
            try:
                sender.send(self._broker, args, task_id, deadline - time.perf_counter())
                return
            except (redis.ConnectionError, redis.TimeoutError):
                if time.perf_counter() + DIRECT_RETRY_PAUSE >= deadline:
                    raise
                time.sleep(DIRECT_RETRY_PAUSE)

    def _replies_ready(self, timeout: float) -> Replies:
        """This client's result subscription, started on first use and waited for (up to
        ``timeout``) so that no result can be published before it listens; a call made
        while it is not in place still gets its result, read when it is (see Replies)."""
        if self._replies is None:
            with self._setup_lock:
                if self._replies is None:
                    self._replies = Replies(self.app)
        self._replies.wait_ready(timeout)
        return self._replies

    def _dispatch(self) -> None:
        """Gather concurrent calls into batches and send them, ``max_in_flight`` at most."""
        while True:
            first = self._pending.get()
            if first is None:
                return
            batch = [first]
            deadline = time.perf_counter() + self.window
            stop = self._gather(batch, deadline)
            self._slots.acquire()  # while every slot is busy, the next batch grows
            stop = self._gather(batch, None) or stop
            self._send_batch(batch)
            if stop:
                return

    def _gather(self, batch: list, deadline: float | None) -> bool:
        """Add queued calls to ``batch`` until ``deadline`` (None: only what is queued
        now) or ``max_batch``; True when the client is closing."""
        while len(batch) < self.max_batch:
            remaining = 0.0 if deadline is None else deadline - time.perf_counter()
            try:
                item = self._pending.get(timeout=remaining) if remaining > 0 \
                    else self._pending.get_nowait()
            except queue.Empty:
                return False
            if item is None:
                return True
            batch.append(item)
        return False

    def _send_batch(self, batch: list[tuple[Any, Future, float]]) -> None:
        """Send the calls whose callers still wait; the message expires when the oldest
        of them gives up, so no decision is made for a caller that has left."""
        batch = [item for item in batch if not item[1].done()]
        if not batch:
            self._slots.release()
            return
        started = min(enqueued for _, _, enqueued in batch)
        orders = [order for order, _, _ in batch]
        expires = self.timeout - (time.perf_counter() - started)
        if expires <= 0.001:
            self._slots.release()
            return  # their callers are answering risk_timeout themselves
        try:
            replies, task_id, future = self._publish("risk.check_order_batch", [orders],
                                                     self.timeout, started)
        except Unavailable as exc:
            self._slots.release()
            _fail_batch(batch, str(exc), UNAVAILABLE_REASON, started)
            return
        # Answered by the reader thread when the result arrives; forgotten (and every
        # caller answered risk_timeout) when the oldest caller's timeout passes first.
        future.add_done_callback(lambda done: self._batch_answered(done, batch, started))
        left = self.timeout - (time.perf_counter() - started)
        self._deadlines.add(time.monotonic() + left,
                            lambda: self._batch_timed_out(replies, task_id, future))

    @staticmethod
    def _batch_timed_out(replies: Replies, task_id: str, future: Future) -> None:
        replies.forget(task_id)
        try:
            future.set_result(None)  # no decisions: every caller fails closed
        except InvalidStateError:
            pass  # answered in time: nothing to do

    def _batch_answered(self, future: Future, batch: list[tuple[Any, Future, float]],
                        started: float) -> None:
        try:
            meta = future.result()
            if meta is None:
                _fail_batch(batch, f"no risk decision within {self.timeout * 1000:.0f} ms",
                            TIMEOUT_REASON, started)
                return
            decisions = meta["result"] if meta["status"] == states.SUCCESS else None
            if not isinstance(decisions, list):
                _fail_batch(batch, _engine_error(meta), UNAVAILABLE_REASON, started)
                return
            message = f"no risk decision within {self.timeout * 1000:.0f} ms"
            for i, (order, waiting, _) in enumerate(batch):
                _resolve(waiting, decisions[i] if i < len(decisions)
                         else fail_closed(order, TIMEOUT_REASON, message, started))
        finally:
            self._slots.release()

class Deadlines:
    """Calls to make at given moments, from one thread (not a timer thread per batch)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Any]] = []
        self._order = itertools.count()
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="risk-client-deadlines",
                                        daemon=True)
        self._thread.start()

    def add(self, at: float, call: Any) -> None:
        """Call ``call()`` at ``at`` (``time.monotonic()``)."""
        with self._cond:
            heapq.heappush(self._heap, (at, next(self._order), call))
            if self._heap[0][2] is call:
                self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout=2)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed:
                    if self._heap:
                        wait = self._heap[0][0] - time.monotonic()
                        if wait <= 0:
                            break
                        self._cond.wait(wait)
                    else:
                        self._cond.wait()
                if self._closed:
                    due = [call for _, _, call in self._heap]  # answer everyone now
                    self._heap.clear()
                else:
                    due = [heapq.heappop(self._heap)[2]]
            for call in due:
                try:
                    call()
                except Exception:  # noqa: BLE001 - one bad callback must not stop the rest
                    logging.getLogger(__name__).exception("deadline callback failed")
            if self._closed:
                return


class Unavailable(Exception):
    """A call could not be sent; its message is what the caller is told."""


def _fail_batch(batch: list[tuple[Any, Future, float]], message: str, reason: str,
                started: float) -> None:
    for order, future, _ in batch:
        _resolve(future, fail_closed(order, reason, message, started))


def _engine_error(meta: dict) -> str:
    """What a caller is told when the task failed instead of answering."""
    result = meta.get("result")
    if isinstance(result, dict) and result.get("exc_type"):
        return f"risk engine error: {result['exc_type']}: {result.get('exc_message')}"[:300]
    return f"risk engine error: task {meta.get('status')}"


def _publish_retries(timeout: float) -> dict:
    """A publish retry policy that gives up after about ``timeout`` seconds."""
    return {"max_retries": max(1, int(timeout / 0.1)), "interval_start": 0,
            "interval_step": 0.05, "interval_max": 0.1}
