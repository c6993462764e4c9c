"""Fixtures of the integration tests (the servers and workers come from tests/conftest.py)."""

from __future__ import annotations

import pytest

from tests.integration.helpers import World


@pytest.fixture()
def world(app, rt):  # noqa: ANN001, ANN201
    """Arrange steps on a fresh state store; checks go to the session's broker."""
    return World(rt, app)
