"""Every Celery setting of the risk engine: broker, backend, serialisation, queues,
routes, delivery guarantees and the beat schedule. Values that differ per deployment
come from ``RISK_*`` variables through ``risk_tasks.settings``.
"""

from kombu import Exchange, Queue

from beat_schedule import SCHEDULE
from risk_tasks.settings import get_settings

_settings = get_settings()

# -- CONNECTIONS --
broker_url = _settings.broker_url
result_backend = _settings.result_backend
if result_backend.startswith(("redis://", "rediss://", "unix://")):
    # Celery's Redis backend, minus a read before each pre-trade result (see the module).
    result_backend = f"risk_tasks.result_backend.RiskRedisBackend+{result_backend}"
elif result_backend.startswith("redis+socket://"):  # the same over Redis's Unix socket
    result_backend = ("risk_tasks.result_backend.RiskRedisBackend+"
                      + result_backend.removeprefix("redis+"))
broker_connection_retry_on_startup = True
broker_connection_max_retries = None  # keep trying: workers reconnect by themselves
broker_transport_options = {
    # Redelivery of a message whose worker died (acks_late tasks): after this long.
    # Retry back-off is capped well below it, so a waiting retry is never redelivered.
    "visibility_timeout": _settings.visibility_timeout_seconds,
    "unacked_restore_interval": 5,
    "unacked_restore_throttle": 1,
    # Off only on the pretrade worker (RISK_BROKER_ACK_EMULATION=0): at-most-once is
    # right for a check that fails closed and is retried under the same order_id, and
    # wrong for liquidations, unwinds and alerts, which run on other workers.
    "ack_emulation": _settings.broker_ack_emulation,
    "socket_timeout": 10,
    "socket_connect_timeout": 5,
    "health_check_interval": 10,
}
result_backend_transport_options = {"retry_policy": {"timeout": 5.0}}
redis_socket_timeout = 10
redis_socket_connect_timeout = 5
redis_retry_on_timeout = True
redis_backend_health_check_interval = 10

# -- SERIALISATION: JSON ONLY --
task_serializer = "json"
result_serializer = "json"
event_serializer = "json"
accept_content = ["json"]
result_accept_content = ["json"]

timezone = "UTC"
enable_utc = True

# -- QUEUES AND ROUTES --
QUEUES = ("pretrade", "control", "ingest", "monitor", "shards", "liquidation", "unwind",
          "alerts", "reports", "dead_letter")
_exchange = Exchange("risk", type="direct")
task_queues = tuple(Queue(name, _exchange, routing_key=name) for name in QUEUES)
task_default_queue = "ingest"
task_default_exchange = "risk"
task_default_routing_key = "ingest"
task_create_missing_queues = False

task_routes = {
    "risk.check_order": {"queue": "pretrade"},
    "risk.check_order_batch": {"queue": "pretrade"},
    "risk.get_risk_metrics": {"queue": "pretrade"},
    "risk.ping": {"queue": "pretrade"},
    "risk.trigger_emergency_stop": {"queue": "control"},
    "risk.re_enable_trading": {"queue": "control"},
    "risk.emergency_status": {"queue": "control"},
    "risk.ingest_prices": {"queue": "ingest"},
    "risk.upsert_account": {"queue": "ingest"},
    "risk.apply_fill": {"queue": "ingest"},
    "risk.drain_journal": {"queue": "ingest"},
    "risk.refresh_policies": {"queue": "ingest"},
    "risk.monitor_tick": {"queue": "monitor"},
    "risk.evaluate_shard": {"queue": "shards"},
    "risk.aggregate_tick": {"queue": "monitor"},
    "risk.stress_test": {"queue": "monitor"},
    "risk.reset_daily": {"queue": "monitor"},
    "risk.liquidate_account": {"queue": "liquidation"},
    "risk.unwind_account": {"queue": "unwind"},
    "risk.unwind_shard": {"queue": "unwind"},
    "risk.send_alert": {"queue": "alerts"},
    "risk.compliance_report": {"queue": "reports"},
    "risk.dead_letter": {"queue": "dead_letter"},
}

# -- DELIVERY --
worker_prefetch_multiplier = 1
worker_disable_rate_limits = True
task_acks_late = False  # state-changing tasks set acks_late=True themselves
task_reject_on_worker_lost = True  # with acks_late: redeliver when the worker dies
task_ignore_result = True  # tasks whose callers read the result opt in
result_expires = 60  # results only matter to a caller that is waiting for them
result_chord_ordered = False
task_time_limit = 300
task_soft_time_limit = 240
worker_send_task_events = _settings.task_events
task_send_sent_event = False
worker_hijack_root_logger = False

# -- BEAT --
beat_schedule = SCHEDULE
beat_max_loop_interval = 1
