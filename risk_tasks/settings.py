"""Every setting of the risk engine, read once from ``RISK_*`` environment variables.

One frozen, typed object; the defaults run the whole system on one machine. Each field
documents its unit. Nothing secret has a default: passwords come in through the URLs
(``RISK_REDIS_URL=redis://:secret@host:6379/2``) or the Flower basic-auth variable.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Mapping

PREFIX = "RISK_"


class SettingsError(ValueError):
    """An environment variable holds a value that cannot be used."""


@dataclass(frozen=True, slots=True)
class Settings:
    """Configuration of every process (workers, beat, CLI, client).

    Every field is set by ``RISK_<FIELD NAME IN UPPER CASE>``; lists are comma separated.
    """

    # -- CONNECTIONS --
    broker_url: str = "redis://127.0.0.1:6379/0"
    """Celery broker (Redis). On the same host as Redis, its Unix socket costs less per
    round trip: ``redis+socket:///run/redis.sock?virtual_host=0`` (kombu's form)."""
    result_backend: str = "redis://127.0.0.1:6379/1"
    """Celery result backend (Redis); check_order callers read their decision here.
    Over a Unix socket: ``redis+socket:///run/redis.sock?virtual_host=1``."""
    redis_url: str = "redis://127.0.0.1:6379/2"
    """Hot state: prices, accounts, positions, trading states, idempotency, journals.
    Over a Unix socket: ``unix:///run/redis.sock?db=2`` (redis-py's form)."""
    database_url: str = "sqlite:///var/risk.db"
    """System of record. PostgreSQL in production and tests
    (``postgresql+psycopg://user@host/db``); a local SQLite file for a first look."""
    db_pool_size: int = 5
    """SQLAlchemy pool size per process (PostgreSQL only)."""
    redis_socket_timeout: float = 5.0
    """Seconds before a Redis command on the state store gives up."""

    # -- TRADING RULES --
    operators: tuple[str, ...] = ()
    """Operators allowed to resume trading (``re_enable_trading``). Empty: nobody."""
    shards: int = 8
    """Account shards of the monitor sweep. Changing it needs ``riskctl state rebuild``."""
    monitor_preload: bool = True
    """A worker that consumes ``shards`` reads every shard into memory before it starts
    (prefork children inherit the copies), so no tick waits for a process's first sight
    of a shard (seconds at 1,000,000 accounts)."""
    default_imr: str = "0.10"
    """Initial margin rate of a symbol that does not set one (decimal string)."""
    default_mmr: str = "0.05"
    """Maintenance margin rate of a symbol that does not set one (decimal string)."""
    price_stale_seconds: float = 5.0
    """A mark price older than this (seconds, by its feed timestamp) is ``no_price``."""
    rate_limit_per_second: int = 50
    """Orders checked per account in any sliding window of ``rate_window_seconds``."""
    rate_window_seconds: float = 1.0
    """Length of the rate-limit window, seconds."""
    idempotency_ttl_seconds: int = 90_000
    """How long a decision is kept for a repeated ``order_id`` (25 h)."""
    fill_idempotency_ttl_seconds: int = 30 * 86_400
    """How long a ``fill_id`` is remembered (30 days)."""
    price_jump_fraction: float = 0.0
    """A tick further than this relative distance from the last good price is held
    until a second tick confirms it. 0 disables the check."""
    price_future_tolerance_seconds: float = 5.0
    """Price ticks stamped further in the future than this are rejected."""

    # -- MONITOR --
    monitor_interval_seconds: float = 1.0
    """Beat period of ``risk.monitor_tick``."""
    monitor_deadline_seconds: float = 1.0
    """A tick older than this when it starts is dropped; a sweep still running after it
    makes the next tick skip."""
    circuit_breaker_violations: int = 5
    """Hard violations of one account within the window that put it in REDUCING."""
    circuit_breaker_window_seconds: float = 60.0
    """Window of the per-account circuit breaker, seconds."""
    feed_stale_seconds: float = 10.0
    """A price feed silent for longer than this puts the platform in REDUCING. 0: off."""
    liquidation_resend_seconds: float = 30.0
    """An open liquidation episode whose task has not started after this many seconds
    is sent again (same episode id, so it cannot run twice): a message the broker lost
    (a worker killed between fetching it and recording it unacked) is not waited out."""
    alert_dedup_seconds: float = 300.0
    """Alerts with the same policy and account are sent once per this many seconds."""

    # -- ACTIONS --
    gateway: str = "paper"
    """Execution gateway: ``paper`` (fills at mark) or ``http``."""
    gateway_url: str = ""
    """Base URL of the HTTP execution gateway."""
    gateway_timeout_seconds: float = 5.0
    """Timeout of one HTTP gateway call."""
    unwind_slice_fraction: float = 1.0
    """Fraction of each position closed per unwind step (1.0: close at once)."""
    unwind_pause_seconds: float = 0.0
    """Pause between unwind slices, seconds."""
    action_batch_size: int = 0
    """Liquidation messages a solo ``actions`` worker runs as one batch (their alerts
    sent together, ``risk_tasks.batches``); also that worker's prefetch. 1: one by one;
    0 (default): 32 with the paper gateway, 1 with ``http`` (a liquidation then waits on
    the venue, and a worker holding many would keep them from idle workers)."""
    action_batch_wait_ms: float = 2.0
    """How long a batch waits for more messages after its first, milliseconds."""
    task_max_retries: int = 5
    """Retries of an action task (liquidation, unwind, alert) before dead-lettering."""
    retry_backoff_max_seconds: float = 30.0
    """Cap of the jittered exponential back-off between retries, seconds. Never more
    than half of ``visibility_timeout_seconds`` is used: a retry waiting in a worker
    longer than the visibility timeout would be delivered a second time."""
    retry_backoff_base_seconds: float = 0.5
    """First back-off step, seconds: with ``c = min(cap, base * 2**n)``, retry ``n``
    waits a random time in ``[c / 2, c]``."""
    lease_ttl_seconds: float = 10.0
    """Per-account action lease (liquidation, unwind), seconds. Renewed before every
    gateway call, so it must exceed ``gateway_timeout_seconds``; a worker that dies
    holding it blocks the account for at most this long. Keep it below the visibility
    timeout so a redelivered action finds the lease free."""
    lease_wait_seconds: float = 5.0
    """How long an action waits for the account lease before it retries later, seconds."""
    action_progress_ttl_seconds: int = 7 * 86_400
    """How long the progress of a liquidation episode or unwind is kept in Redis
    (seconds); a repeat of the same episode or stop within it does nothing twice."""
    alert_webhook_timeout_seconds: float = 5.0
    """Timeout of one webhook POST, seconds."""
    alert_sinks: tuple[str, ...] = ("log", "redis")
    """Where alerts go: any of ``log``, ``redis`` (pub/sub), ``webhook``."""
    alert_webhook_url: str = ""
    """Slack-compatible webhook that receives alerts as JSON POSTs."""
    visibility_timeout_seconds: int = 300
    """Seconds after which a message taken by a worker that died is delivered again."""
    broker_ack_emulation: bool = True
    """Off only on the pretrade worker: at-most-once delivery, lower latency."""
    task_events: bool = True
    """Workers send task events (what Flower shows)."""
    pretrade_task_events: bool = False
    """The pre-trade tasks (``check_order``, ``check_order_batch``, ``get_risk_metrics``,
    ``ping``) send task events too. Off by default: at hundreds of checks a second they
    cost the pretrade worker a third of its throughput and would push every other task
    out of Flower's history within seconds; Prometheus counts and times every check."""
    pretrade_fast_strategy: bool = True
    """The pretrade worker (solo pool) runs pre-trade calls through the lean strategy of
    ``risk_tasks.fastpath``; off: Celery's default request and tracer."""

    # -- OPERATIONS --
    flower_basic_auth: str = ""
    """``user:password`` for Flower. Flower refuses to start without it (see riskctl run)."""
    metrics_port: int = 9808
    """Port of a worker host's ``/metrics`` and ``/health`` endpoint. 0: off.
    ``riskctl run`` gives its children this port and the next ones (one each)."""
    metrics_host: str = "0.0.0.0"
    """Address the ``/metrics`` endpoint listens on (``127.0.0.1``: this machine only)."""
    metrics_dir: str = ""
    """Directory of prometheus-client multiprocess files, one per worker host (wiped when
    the host starts); empty: a fresh temporary directory per host."""
    report_dir: str = "var/reports"
    """Where compliance reports are written (HTML, CSV and JSON, one set per period)."""
    log_json: bool = True
    """Structured JSON logs (one event per line)."""
    journal_batch: int = 2000
    """Records written to the database per drain transaction."""

    extra: Mapping[str, str] = field(default_factory=dict)
    """Unknown ``RISK_*`` variables, kept to report typos."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        known = {f.name: f for f in dataclasses.fields(cls) if f.name != "extra"}
        extra: dict[str, str] = {}
        for key, raw in env.items():
            if not key.startswith(PREFIX):
                continue
            name = key[len(PREFIX):].lower()
            f = known.get(name)
            if f is None:
                extra[key] = raw
                continue
            values[name] = _parse(key, raw, f.default)
        settings = cls(**values, extra=extra)
        settings.validate()
        return settings

    def validate(self) -> None:
        if self.shards < 1:
            raise SettingsError("RISK_SHARDS must be at least 1")
        if self.rate_limit_per_second < 1:
            raise SettingsError("RISK_RATE_LIMIT_PER_SECOND must be at least 1")
        if self.gateway not in ("paper", "http"):
            raise SettingsError("RISK_GATEWAY must be 'paper' or 'http'")
        if self.gateway == "http" and not self.gateway_url:
            raise SettingsError("RISK_GATEWAY=http needs RISK_GATEWAY_URL")
        unknown_sinks = set(self.alert_sinks) - {"log", "redis", "webhook"}
        if unknown_sinks:
            raise SettingsError(f"RISK_ALERT_SINKS has unknown sinks {sorted(unknown_sinks)}")
        if not 0 < self.unwind_slice_fraction <= 1:
            raise SettingsError("RISK_UNWIND_SLICE_FRACTION must be in (0, 1]")
        if self.lease_ttl_seconds <= self.gateway_timeout_seconds:
            raise SettingsError("RISK_LEASE_TTL_SECONDS must exceed RISK_GATEWAY_TIMEOUT_SECONDS")
        if self.task_max_retries < 0:
            raise SettingsError("RISK_TASK_MAX_RETRIES must be at least 0")
        if not 0 <= self.action_batch_size <= 1000:
            raise SettingsError("RISK_ACTION_BATCH_SIZE must be in [0, 1000]")
        if not 0 <= self.action_batch_wait_ms <= 1000:
            raise SettingsError("RISK_ACTION_BATCH_WAIT_MS must be in [0, 1000]")

    @property
    def action_batch(self) -> int:
        """``action_batch_size`` with its default resolved (see there)."""
        if self.action_batch_size:
            return self.action_batch_size
        return 32 if self.gateway == "paper" else 1

    @property
    def is_postgres(self) -> bool:
        return self.database_url.startswith("postgresql")


def _parse(key: str, raw: str, default: Any) -> Any:
    try:
        if isinstance(default, bool):
            lowered = raw.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(raw)
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            value = float(raw)
            if not math.isfinite(value):
                raise ValueError(raw)
            return value
        if isinstance(default, tuple):
            return tuple(part.strip() for part in raw.split(",") if part.strip())
        return raw
    except ValueError:
        raise SettingsError(f"{key}={raw!r} is not a valid {type(default).__name__}") from None


def client_url(url: str) -> str:
    """A Celery/kombu Redis URL as redis-py reads it: the Unix-socket form
    ``redis+socket:///path?virtual_host=N`` (or ``socket://``) becomes
    ``unix:///path?db=N``, with its password; any other URL is returned as it is."""
    from urllib.parse import parse_qsl, urlencode, urlsplit

    for prefix in ("redis+socket://", "socket://"):
        if url.startswith(prefix):
            parts = urlsplit("socket://" + url[len(prefix):])
            query = dict(parse_qsl(parts.query))
            db = query.pop("virtual_host", None)
            if db is not None:
                query["db"] = db.lstrip("/") or "0"
            auth = ""  # user and password stay percent-encoded, as both forms hold them
            if parts.password is not None or parts.username:
                auth = f"{parts.username or ''}:{parts.password or ''}@"
            return f"unix://{auth}{parts.path}" + (f"?{urlencode(query)}" if query else "")
    return url


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read from the environment on first use."""
    return Settings.from_env()
