"""``Replies``: a client's results pushed over one pattern subscription, none missed.

Results are stored the way a worker stores them (the result backend's ``store_result``:
the key, then a publish on the key's channel), on the session's real Redis.
"""

from __future__ import annotations

import time

import pytest
import redis
from celery import states

from risk_tasks.replies import Replies

pytestmark = pytest.mark.integration


@pytest.fixture()
def replies(app):  # noqa: ANN001, ANN201
    made: list[Replies] = []

    def make(start: bool = True) -> Replies:
        r = Replies(app, start=start)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()


def test_a_result_is_handed_to_the_caller_waiting_for_it(app, replies) -> None:  # noqa: ANN001
    r = replies()
    assert r.wait_ready(5)
    first_id, first = r.expect()
    second_id, second = r.expect()
    # when the worker stores the second result first
    app.backend.store_result(second_id, {"n": 2}, states.SUCCESS)
    app.backend.store_result(first_id, {"n": 1}, states.SUCCESS)
    # then each caller gets its own
    assert second.result(timeout=5)["result"] == {"n": 2}
    assert first.result(timeout=5)["result"] == {"n": 1}
    assert first_id.startswith(r.prefix + "-") and first_id != second_id


def test_a_result_stored_before_the_subscription_is_read_when_it_is_in_place(  # noqa: ANN001
        app, replies) -> None:
    # given a call whose result is stored (and published to nobody) before the client
    # listens
    r = replies(start=False)
    task_id, future = r.expect()
    app.backend.store_result(task_id, {"early": True}, states.SUCCESS)
    # when it starts listening
    r.start()
    # then the stored result is read once the subscription is confirmed
    assert future.result(timeout=5)["result"] == {"early": True}


def test_a_lost_subscription_is_made_again_and_results_keep_coming(app, replies) -> None:  # noqa: ANN001
    r = replies()
    assert r.wait_ready(5)
    # when Redis drops every subscriber connection (as a restart or a proxy would)
    killed = redis.Redis.from_url(app.conf.result_backend.split("+", 1)[-1]).client_kill_filter(
        _type="pubsub")
    assert killed >= 1
    task_id, future = r.expect()
    app.backend.store_result(task_id, {"after": "kill"}, states.SUCCESS)
    # then the result still arrives (by the new subscription or its catch-up read)
    assert future.result(timeout=10)["result"] == {"after": "kill"}
    deadline = time.monotonic() + 10
    while not r.wait_ready(0.05) and time.monotonic() < deadline:
        pass
    later_id, later = r.expect()
    app.backend.store_result(later_id, {"n": 3}, states.SUCCESS)
    assert later.result(timeout=5)["result"] == {"n": 3}


def test_only_final_states_answer_and_a_forgotten_call_gets_nothing(app, replies) -> None:  # noqa: ANN001
    r = replies()
    assert r.wait_ready(5)
    task_id, future = r.expect()
    app.backend.store_result(task_id, None, states.STARTED)
    time.sleep(0.2)
    assert not future.done()
    app.backend.store_result(task_id, {"done": 1}, states.SUCCESS)
    assert future.result(timeout=5)["status"] == states.SUCCESS
    # a caller that gave up is forgotten: its late result resolves nothing
    gone_id, gone = r.expect()
    r.forget(gone_id)
    app.backend.store_result(gone_id, {"late": 1}, states.SUCCESS)
    time.sleep(0.2)
    assert not gone.done()
