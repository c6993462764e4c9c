"""A beat schedule that fires on whole multiples of its period (wall clock, UTC).

Celery's interval schedule counts from the last run, so its ticks drift by the time
each send takes and now and then a second is skipped. This one is due at every
boundary ``k * seconds`` and never drifts; ``tick_ts`` is that boundary.
"""

from __future__ import annotations

import math
import time
from datetime import timedelta

from celery.schedules import schedstate, schedule


def tick_ts(seconds: float = 1.0) -> float:
    """The boundary that the current second belongs to (what a monitor tick is named by)."""
    return math.floor(time.time() / seconds) * seconds


class aligned(schedule):  # noqa: N801 - reads like Celery's own ``schedule``/``crontab``
    def __init__(self, seconds: float = 1.0, **kwargs) -> None:  # noqa: ANN003
        super().__init__(run_every=timedelta(seconds=seconds), **kwargs)
        self.period = seconds

    def is_due(self, last_run_at) -> schedstate:  # noqa: ANN001
        now = time.time()
        boundary = math.floor(now / self.period) * self.period
        last = last_run_at.timestamp() if last_run_at is not None else 0.0
        wait = max(boundary + self.period - now, 0.001)
        return schedstate(last < boundary, wait)

    def __reduce__(self):  # noqa: ANN204
        return self.__class__, (self.period,)

    def __repr__(self) -> str:
        return f"<aligned every {self.period} s>"
