"""Fixtures of the integration tests (the servers and workers come from tests/conftest.py)."""

from __future__ import annotations

import pytest

from tests.integration.helpers import World


@pytest.fixture()
def world(app, rt):  # noqa: ANN001, ANN201
    """Arrange steps on a fresh state store; checks go to the session's broker."""
    return World(rt, app)


@pytest.fixture()
def btc_market(world, session_worker):  # noqa: ANN001, ANN201
    """BTC at 100 (10x, 5 % collar), the default policies, A with 10 000; checks are
    decided by the session's worker."""
    world.default_policies()
    world.symbol("BTC", imr="0.10", mmr="0.05", collar="0.05")
    world.prices({"BTC": 100})
    world.account("A", 10_000)
    return world
