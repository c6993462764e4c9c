"""Settings: one frozen, typed object read from ``RISK_*`` environment variables."""

from __future__ import annotations

import dataclasses

import pytest

from risk_tasks.settings import Settings, SettingsError


def refused(env: dict[str, str]) -> str:
    with pytest.raises(SettingsError) as info:
        Settings.from_env(env)
    return str(info.value)


def test_no_variables_give_the_documented_defaults() -> None:
    got = Settings.from_env({})
    assert got == Settings()
    assert got.extra == {}
    assert (got.price_stale_seconds, got.rate_limit_per_second, got.shards) == (5.0, 50, 8)
    assert got.operators == () and got.alert_sinks == ("log", "redis")


def test_variables_without_the_prefix_are_ignored() -> None:
    got = Settings.from_env({"SHARDS": "3", "PATH": "/bin", "risk_shards": "4"})
    assert got.shards == 8 and got.extra == {}


def test_pretrade_task_events_are_off_unless_asked_for() -> None:
    assert Settings().task_events is True and Settings().pretrade_task_events is False
    assert Settings.from_env({"RISK_PRETRADE_TASK_EVENTS": "1"}).pretrade_task_events is True


@pytest.mark.parametrize("raw", ["1", "true", "TRUE", "Yes", "on", " true "])
def test_true_booleans_are_parsed(raw: str) -> None:
    assert Settings.from_env({"RISK_LOG_JSON": "0", "RISK_TASK_EVENTS": raw}).task_events is True


@pytest.mark.parametrize("raw", ["0", "false", "No", "OFF", ""])
def test_false_booleans_are_parsed(raw: str) -> None:
    assert Settings.from_env({"RISK_LOG_JSON": raw}).log_json is False


@pytest.mark.parametrize("raw", ["maybe", "2", "tru", "enabled"])
def test_bad_boolean_is_refused_naming_the_variable(raw: str) -> None:
    message = refused({"RISK_LOG_JSON": raw})
    assert "RISK_LOG_JSON" in message and repr(raw) in message


def test_integers_are_parsed() -> None:
    got = Settings.from_env({"RISK_SHARDS": "16", "RISK_RATE_LIMIT_PER_SECOND": " 200 ",
                             "RISK_METRICS_PORT": "0"})
    assert (got.shards, got.rate_limit_per_second, got.metrics_port) == (16, 200, 0)


@pytest.mark.parametrize("raw", ["1.5", "abc", "", "1e3", "0x10"])
def test_bad_integer_is_refused_naming_the_variable(raw: str) -> None:
    assert "RISK_SHARDS" in refused({"RISK_SHARDS": raw})


def test_floats_are_parsed() -> None:
    got = Settings.from_env({"RISK_PRICE_STALE_SECONDS": "2.5",
                             "RISK_CIRCUIT_BREAKER_WINDOW_SECONDS": "30",
                             "RISK_PRICE_JUMP_FRACTION": "1e-1"})
    assert got.price_stale_seconds == 2.5
    assert got.circuit_breaker_window_seconds == 30.0
    assert got.price_jump_fraction == pytest.approx(0.1)


@pytest.mark.parametrize("raw", ["fast", "", "1,5", "5s"])
def test_bad_float_is_refused_naming_the_variable(raw: str) -> None:
    assert "RISK_PRICE_STALE_SECONDS" in refused({"RISK_PRICE_STALE_SECONDS": raw})


@pytest.mark.parametrize("name", ["RISK_PRICE_STALE_SECONDS", "RISK_RATE_WINDOW_SECONDS",
                                  "RISK_CIRCUIT_BREAKER_WINDOW_SECONDS"])
def test_nan_float_setting_is_refused_naming_the_variable(name: str) -> None:
    assert name in refused({name: "nan"})


def test_lists_are_comma_separated_and_trimmed() -> None:
    got = Settings.from_env({"RISK_OPERATORS": " alice, ops ,,bob ",
                             "RISK_ALERT_SINKS": "log,webhook"})
    assert got.operators == ("alice", "ops", "bob")
    assert got.alert_sinks == ("log", "webhook")


def test_empty_list_is_empty() -> None:
    assert Settings.from_env({"RISK_OPERATORS": ""}).operators == ()


def test_strings_are_taken_as_given() -> None:
    got = Settings.from_env({"RISK_BROKER_URL": "redis://:s3cret@host:6380/5",
                             "RISK_DATABASE_URL": "postgresql+psycopg://u@h/db"})
    assert got.broker_url == "redis://:s3cret@host:6380/5"
    assert got.is_postgres is True
    assert Settings().is_postgres is False


def test_unknown_risk_variables_are_collected_in_extra() -> None:
    got = Settings.from_env({"RISK_SHARDZ": "4", "RISK_EXTRA": "x", "RISK_": "y",
                             "RISK_SHARDS": "2"})
    assert got.extra == {"RISK_SHARDZ": "4", "RISK_EXTRA": "x", "RISK_": "y"}
    assert got.shards == 2


def test_from_env_reads_the_process_environment_by_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RISK_SHARDS", "3")
    monkeypatch.setenv("RISK_TYPO_SETTING", "1")
    got = Settings.from_env()
    assert got.shards == 3
    assert got.extra["RISK_TYPO_SETTING"] == "1"


@pytest.mark.parametrize("env, name", [
    ({"RISK_SHARDS": "0"}, "RISK_SHARDS"),
    ({"RISK_SHARDS": "-2"}, "RISK_SHARDS"),
    ({"RISK_RATE_LIMIT_PER_SECOND": "0"}, "RISK_RATE_LIMIT_PER_SECOND"),
    ({"RISK_GATEWAY": "ftp"}, "RISK_GATEWAY"),
    ({"RISK_GATEWAY": "http"}, "RISK_GATEWAY_URL"),
    ({"RISK_ALERT_SINKS": "log,pager"}, "RISK_ALERT_SINKS"),
    ({"RISK_UNWIND_SLICE_FRACTION": "0"}, "RISK_UNWIND_SLICE_FRACTION"),
    ({"RISK_UNWIND_SLICE_FRACTION": "1.5"}, "RISK_UNWIND_SLICE_FRACTION"),
])
def test_unusable_values_are_refused_naming_the_variable(env: dict, name: str) -> None:
    assert name in refused(env)


def test_http_gateway_with_a_url_is_accepted() -> None:
    got = Settings.from_env({"RISK_GATEWAY": "http", "RISK_GATEWAY_URL": "http://exec:8080"})
    assert (got.gateway, got.gateway_url) == ("http", "http://exec:8080")


def test_settings_are_frozen() -> None:
    got = Settings.from_env({})
    with pytest.raises(dataclasses.FrozenInstanceError):
        got.shards = 2  # type: ignore[misc]


def test_every_field_has_a_variable_and_round_trips_its_default() -> None:
    # every field but ``extra`` is settable, and its default read back unchanged
    env = {}
    for f in dataclasses.fields(Settings):
        if f.name == "extra":
            continue
        value = f.default
        if isinstance(value, bool):
            env[f"RISK_{f.name.upper()}"] = "true" if value else "false"
        elif isinstance(value, tuple):
            env[f"RISK_{f.name.upper()}"] = ",".join(value)
        else:
            env[f"RISK_{f.name.upper()}"] = str(value)
    got = Settings.from_env(env)
    assert got == Settings()
    assert got.extra == {}


@pytest.mark.parametrize("env,batch", [
    ({}, 32),  # paper gateway: liquidations run in batches
    ({"RISK_GATEWAY": "http", "RISK_GATEWAY_URL": "http://exec:8080"}, 1),  # each waits on the venue
    ({"RISK_GATEWAY": "http", "RISK_GATEWAY_URL": "http://exec:8080",
      "RISK_ACTION_BATCH_SIZE": "8"}, 8),
    ({"RISK_ACTION_BATCH_SIZE": "1"}, 1),
])
def test_the_action_batch_defaults_by_gateway_unless_set(env: dict, batch: int) -> None:
    assert Settings.from_env(env).action_batch == batch


@pytest.mark.parametrize("name,value", [("RISK_ACTION_BATCH_SIZE", "-1"),
                                        ("RISK_ACTION_BATCH_SIZE", "5000"),
                                        ("RISK_ACTION_BATCH_WAIT_MS", "-2")])
def test_action_batch_settings_out_of_range_are_refused(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})


def test_a_unix_socket_url_of_celery_reads_as_redis_pys_own():
    import redis.connection

    from risk_tasks.settings import client_url

    escaped = "p%40ss"  # a throw-away password holding an "@", percent-encoded in URLs
    url = client_url(f"redis+socket://:{escaped}@/run/redis.sock?virtual_host=3")
    assert url == f"unix://:{escaped}@/run/redis.sock?db=3"
    parsed = redis.connection.parse_url(url)
    assert (parsed["path"], parsed["db"], parsed["password"]) == ("/run/redis.sock", 3, "p@ss")
    assert client_url("socket:///run/redis.sock") == "unix:///run/redis.sock"
    for same in ("redis://:pw@127.0.0.1:6379/2", "unix:///run/redis.sock?db=2",
                 "rediss://h:6380/0"):
        assert client_url(same) == same
