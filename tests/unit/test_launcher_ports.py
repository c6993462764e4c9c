"""``riskctl run`` gives every host process a /metrics port of its own."""

from __future__ import annotations

from pathlib import Path

from risk_tasks.launcher import children
from risk_tasks.settings import get_settings


def ports(monkeypatch, base: str) -> dict[str, str]:  # noqa: ANN001
    monkeypatch.setenv("RISK_METRICS_PORT", base)
    get_settings.cache_clear()
    try:
        procs = children(5555, True, Path("/tmp"))
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
    return {p.name: p.env.get("RISK_METRICS_PORT") for p in procs}


def test_each_worker_and_beat_gets_the_next_port(monkeypatch):
    assert ports(monkeypatch, "9808") == {"worker-pretrade": "9808", "worker-monitor": "9809",
                                          "worker-actions": "9810", "worker-ops": "9811",
                                          "beat": "9812", "flower": None}


def test_port_zero_keeps_every_endpoint_off(monkeypatch):
    assert set(ports(monkeypatch, "0").values()) == {"0", None}


def test_flower_gets_its_credentials_in_the_environment_not_the_command_line(monkeypatch):
    monkeypatch.setenv("RISK_FLOWER_BASIC_AUTH", "ops:pw-123")
    get_settings.cache_clear()
    try:
        flower = [p for p in children(5599, True, Path("/tmp")) if p.name == "flower"][0]
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
    assert flower.env == {"FLOWER_BASIC_AUTH": "ops:pw-123"}
    assert "--port=5599" in flower.command and not any("pw-123" in a for a in flower.command)
