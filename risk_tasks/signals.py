"""Process lifecycle: fresh dependencies after each fork, structured logs."""

from celery.signals import after_setup_logger, worker_process_init

import risk_tasks.exporter  # noqa: F401  (the /metrics endpoint and its multiprocess files)
from risk_tasks.logs import configure_logging
from risk_tasks.runtime import reset_runtime


@worker_process_init.connect
def _fresh_runtime_after_fork(**_: object) -> None:
    reset_runtime()


@after_setup_logger.connect
def _structured_logs(logger, loglevel=None, **_: object) -> None:  # noqa: ANN001
    configure_logging(logger, loglevel)
