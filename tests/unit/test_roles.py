"""The worker roles' command lines: the actions role's prefetch is its batch."""

from __future__ import annotations

import pytest

from risk_tasks.roles import ROLES, worker_command
from risk_tasks.settings import Settings

HTTP = {"RISK_GATEWAY": "http", "RISK_GATEWAY_URL": "http://exec:8080"}


@pytest.mark.parametrize("env,prefetch", [({}, "32"), (HTTP, "1"),
                                          ({"RISK_ACTION_BATCH_SIZE": "8"}, "8")])
def test_the_actions_worker_prefetches_one_batch(env: dict, prefetch: str) -> None:
    argv = worker_command("actions", settings=Settings.from_env(env))
    assert f"--prefetch-multiplier={prefetch}" in argv
    assert argv[argv.index("-P") + 1] == "solo"  # batches run only on the solo pool


@pytest.mark.parametrize("role", sorted(set(ROLES) - {"actions"}))
def test_other_roles_keep_the_configured_prefetch(role: str) -> None:
    assert not any(a.startswith("--prefetch-multiplier") for a in worker_command(role))
