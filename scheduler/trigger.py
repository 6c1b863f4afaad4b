"""The APScheduler 3.11 side: a trigger that asks :mod:`scheduler.cron`, and an executor that
hands each due tick (job id + its scheduled time) to the engine instead of calling a function.

APScheduler is only the timer here: the engine decides what a tick does, so the job's own
function, misfire grace and instance limits are not used (every due time is handed over, late or
not; coalescing is off).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from apscheduler.executors.base import BaseExecutor
from apscheduler.triggers.base import BaseTrigger

from scheduler.cron import Cron


class CronTrigger(BaseTrigger):  # type: ignore[misc]
    """Fire times of a :class:`~scheduler.cron.Cron` (cronsim arithmetic, our DST rule)."""

    __slots__ = ("cron",)

    def __init__(self, cron: Cron) -> None:
        self.cron = cron

    def get_next_fire_time(
        self, previous_fire_time: datetime | None, now: datetime
    ) -> datetime | None:
        after = previous_fire_time or now - timedelta(microseconds=1)
        return self.cron.next_after(after)

    def __str__(self) -> str:
        return f"cron[{self.cron.expression!r} {self.cron.zone.key}]"


class TickExecutor(BaseExecutor):  # type: ignore[misc]
    """Hands ``(job id, scheduled time)`` of every due tick to ``on_tick`` (which must not
    block: it starts the engine's own task)."""

    def __init__(self, on_tick: Callable[[str, datetime], None]) -> None:
        super().__init__()
        self._on_tick = on_tick

    def submit_job(self, job: Any, run_times: list[datetime]) -> None:
        self._do_submit_job(job, run_times)

    def _do_submit_job(self, job: Any, run_times: list[datetime]) -> None:
        for run_time in run_times:
            self._on_tick(job.id, run_time)
