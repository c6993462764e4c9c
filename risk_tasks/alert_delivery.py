"""Delivering one alert to the configured sinks, once, and storing it.

Sinks (``RISK_ALERT_SINKS``): ``log`` (one structured line), ``redis`` (PUBLISH on the
state Redis to ``risk.alerts.<level>``: ``risk.alerts.warning``, ``risk.alerts.critical``,
``risk.alerts.emergency``, the subjects the old service published on; the message is the
alert as JSON) and ``webhook`` (a JSON POST to ``RISK_ALERT_WEBHOOK_URL``,
Slack-compatible: ``{"text": "[CRITICAL] ...", "alert": {...}}``).

Once, in three senses:

- **De-duplication** (``risk_tasks.alerting.claim``): the first alert of a kind, policy
  and account in ``RISK_ALERT_DEDUP_SECONDS`` wins the window; any other with a
  different id is suppressed, on every instance.
- **Per alert id**: a short lock lets one worker at a time deliver a given alert id, and
  the sinks already reached are remembered (``risk:alert:sinks:<id>``), so a retry after
  a webhook failure, or a redelivered message, does not repeat the log line or the
  PUBLISH. A run that dies between a sink and its bookkeeping delivers to that sink again
  on redelivery (at-least-once per sink).
- **Stored**: every alert, suppressed ones included (``deduplicated``), is journaled as
  an ``alert`` record and lands in the ``alerts`` table, with the sinks it reached.
"""

from __future__ import annotations

import logging
import math
import uuid
from typing import Any, Callable

import orjson
import requests

from risk_tasks import alerting
from risk_tasks.engine.validation import InvalidInput, identifier
from risk_tasks.failures import BadInput, LeaseBusy, PermanentError, TransientError
from risk_tasks.logs import log_event
from risk_tasks.metrics import ALERTS_DEDUPLICATED, ALERTS_PUBLISHED

log = logging.getLogger(__name__)

LOCK_MS = 30_000  # longer than one delivery can take (time limit of risk.send_alert)
LOG_LEVELS = {"warning": logging.WARNING, "critical": logging.ERROR,
              "emergency": logging.CRITICAL}
MAX_MESSAGE = 10_000

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class WebhookError(TransientError):
    """The webhook did not take the alert (timeout, connection, 5xx): retry."""


class WebhookRefused(PermanentError):
    """The webhook refused the alert (4xx): retrying cannot help."""


def channel(level: str) -> str:
    return f"risk.alerts.{level}"


def validate_alert(raw: Any) -> dict[str, Any]:
    """The alert with the shape of ``risk_tasks.alerting``; ``BadInput`` otherwise."""
    if not isinstance(raw, dict):
        raise BadInput(f"alert: must be a JSON object, got {type(raw).__name__}")
    try:
        alert_id = identifier(raw, "alert_id", max_length=64)
        kind = identifier(raw, "kind", max_length=64)
        policy = identifier(raw, "policy", required=False, max_length=255)
        account_id = identifier(raw, "account_id", required=False)
    except InvalidInput as exc:
        raise BadInput(f"alert.{exc}") from exc
    level = raw.get("level")
    if level not in alerting.LEVELS:
        raise BadInput(f"alert.level: must be one of {', '.join(alerting.LEVELS)}")
    message = raw.get("message")
    if not isinstance(message, str) or not message:
        raise BadInput("alert.message: is required (a non-empty string)")
    details = raw.get("details") or {}
    if not isinstance(details, dict):
        raise BadInput("alert.details: must be a JSON object")
    at = raw.get("at")
    if isinstance(at, bool) or not isinstance(at, (int, float)) or not math.isfinite(at):
        at = None
    return {"alert_id": alert_id, "level": level, "kind": kind, "policy": policy,
            "account_id": account_id, "message": message[:MAX_MESSAGE], "details": details,
            "at": at}


# -- SINKS --

def to_log(rt, alert: dict) -> None:  # noqa: ANN001
    log_event(log, "alert", LOG_LEVELS[alert["level"]], alert_id=alert["alert_id"],
              alert_level=alert["level"], kind=alert["kind"], policy=alert["policy"],
              account_id=alert["account_id"], alert_message=alert["message"],
              details=alert["details"])


def to_redis(rt, alert: dict) -> None:  # noqa: ANN001
    rt.redis.publish(channel(alert["level"]), orjson.dumps(alert))


def to_webhook(rt, alert: dict) -> None:  # noqa: ANN001
    url = rt.settings.alert_webhook_url
    if not url:
        raise WebhookRefused("the webhook sink is configured without RISK_ALERT_WEBHOOK_URL")
    text = f"[{alert['level'].upper()}] {alert['message']}"
    timeout = rt.settings.alert_webhook_timeout_seconds
    try:
        response = requests.post(url, json={"text": text, "alert": alert},
                                 timeout=(timeout, timeout))
    except (requests.Timeout, requests.ConnectionError) as exc:
        raise WebhookError(f"webhook: {exc.__class__.__name__}") from exc
    if response.status_code >= 500 or response.status_code in (408, 429):
        raise WebhookError(f"webhook: HTTP {response.status_code}")
    if response.status_code >= 400:
        raise WebhookRefused(f"webhook: HTTP {response.status_code} {response.text[:300]}")


SINKS: dict[str, Callable[[Any, dict], None]] = {
    "log": to_log, "redis": to_redis, "webhook": to_webhook,
}


# -- DELIVERY --

def sinks_key(alert_id: str) -> str:
    return f"risk:alert:sinks:{alert_id}"


def lock_key(alert_id: str) -> str:
    return f"risk:alert:lock:{alert_id}"


def deliver(rt, raw: Any) -> dict[str, Any]:  # noqa: ANN001 - risk_tasks.runtime.Runtime
    """Deliver an alert (unless it is a duplicate) and store it; the outcome."""
    alert = validate_alert(raw)
    if alert["at"] is None:
        alert["at"] = rt.clock.time()
    window = rt.settings.alert_dedup_seconds
    if not alerting.claim(rt.redis, alert, window):
        store(rt, alert, [], deduplicated=True)
        ALERTS_DEDUPLICATED.inc()
        log_event(log, "alert suppressed as a duplicate", alert_id=alert["alert_id"],
                  kind=alert["kind"], policy=alert["policy"], account_id=alert["account_id"])
        return {"ok": True, "alert_id": alert["alert_id"], "deduplicated": True,
                "delivered_to": []}
    token = uuid.uuid4().hex
    if not rt.redis.set(lock_key(alert["alert_id"]), token, nx=True, px=LOCK_MS):
        raise LeaseBusy(f"alert {alert['alert_id']} is being delivered by another worker")
    try:
        key = sinks_key(alert["alert_id"])
        reached = {m.decode() for m in rt.redis.smembers(key)}
        first = not reached
        try:
            for sink in rt.settings.alert_sinks:
                if sink in reached:
                    continue
                SINKS[sink](rt, alert)
                pipe = rt.redis.pipeline(transaction=True)
                pipe.sadd(key, sink).expire(key, int(window) + 3600)
                pipe.execute()
                reached.add(sink)
        finally:
            delivered = [s for s in rt.settings.alert_sinks if s in reached]
            store(rt, alert, delivered, deduplicated=False)
        if first:
            ALERTS_PUBLISHED.labels(alert["level"]).inc()
    finally:
        rt.redis.eval(_RELEASE, 1, lock_key(alert["alert_id"]), token)
    return {"ok": True, "alert_id": alert["alert_id"], "deduplicated": False,
            "delivered_to": delivered}


def store(rt, alert: dict, delivered: list[str], deduplicated: bool) -> None:  # noqa: ANN001
    rt.store.journal({"t": "alert", "alert": alert, "delivered_to": delivered,
                      "deduplicated": deduplicated, "at": alert["at"]})
