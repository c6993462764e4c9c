"""Process lifecycle: fresh dependencies after each fork, structured logs."""

import logging
import time

from celery.signals import after_setup_logger, worker_init, worker_process_init, worker_ready

import risk_tasks.exporter  # noqa: F401  (the /metrics endpoint and its multiprocess files)
from risk_tasks.logs import configure_logging
from risk_tasks.logs import log_event
from risk_tasks.runtime import reset_runtime, runtime

log = logging.getLogger(__name__)


@worker_process_init.connect
def _fresh_runtime_after_fork(**_: object) -> None:
    reset_runtime()


@worker_init.connect
def _preload_shards(sender, **_: object) -> None:  # noqa: ANN001 - Celery's WorkController
    """A monitor worker (one that consumes ``shards``) reads every shard before its pool
    starts (see ``risk_tasks.monitor.cache.preload``)."""
    if "shards" not in sender.app.amqp.queues.consume_from:
        return
    rt = runtime()
    if not rt.settings.monitor_preload:
        return
    from risk_tasks.monitor.cache import preload

    started = time.perf_counter()
    try:
        accounts = preload(rt.redis, rt.settings.redis_url, rt.settings.shards)
    except Exception as exc:  # noqa: BLE001 - a cold cache is slower, not wrong
        log_event(log, "shard preload failed; shards load at first sight", logging.WARNING,
                  error=f"{exc.__class__.__name__}: {exc}")
        return
    finally:
        reset_runtime(close=True)  # the pool's processes open their own connections
    log_event(log, "shards preloaded", logging.WARNING, shards=rt.settings.shards,
              accounts=accounts, seconds=round(time.perf_counter() - started, 2))


@worker_ready.connect
def _drop_parent_copies(sender, **_: object) -> None:  # noqa: ANN001 - Celery's Consumer
    """A prefork parent never evaluates a shard: once its children have forked with the
    preloaded copies, it lets its own go (a child forked later, to replace one, loads
    at first sight)."""
    if type(getattr(sender, "pool", None)).__module__ == "celery.concurrency.prefork":
        from risk_tasks.monitor.cache import forget_caches

        forget_caches()


@after_setup_logger.connect
def _structured_logs(logger, loglevel=None, **_: object) -> None:  # noqa: ANN001
    configure_logging(logger, loglevel)
