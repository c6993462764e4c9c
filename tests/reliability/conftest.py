"""Fixtures of the reliability tests: the session's servers for most, and a ``Stack``
(servers of the test's own) for the tests that restart or stop a server."""

from __future__ import annotations

import pytest

from tests.integration.helpers import World
from tests.reliability.stack import Stack


@pytest.fixture()
def world(app, rt):  # noqa: ANN001, ANN201
    """Arrange steps on a fresh state store; checks go to the session's broker."""
    return World(rt, app)


@pytest.fixture()
def stack_factory(rt):  # noqa: ANN001, ANN201
    """``stack_factory(private_postgres=False, env_extra={})`` -> a started Stack.

    Depends on ``rt`` so that the session's database is emptied first (a Stack without a
    private PostgreSQL writes its journal there)."""
    made: list[Stack] = []

    def make(**kwargs) -> Stack:  # noqa: ANN003
        stack = Stack(**kwargs)
        made.append(stack)
        return stack.start()

    yield make
    for stack in made:
        stack.close()
