"""The leader's engine: APScheduler jobs built from the ``schedules`` table, and what a tick does.

Runs only while this node holds the scheduler lock (``scheduler.leadership``). Each due tick
submits the run request of ``scheduler.ticks`` (exactly once per schedule and fire time, whoever
submits it), applies the overlap policy, and records the schedule's fire state. A tick that
cannot be submitted (five attempts) is logged and counted as missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from core.clock import Clock, isoformat
from core.errors import NotFound
from core.models import SubmittedRun
from core.ports import RunGateway
from scheduler.misfire import plan_catch_up
from scheduler.models import OverlapPolicy, Schedule
from scheduler.store import ScheduleStore, TickRecord
from scheduler.ticklog import TickLog
from scheduler.ticks import tick_request
from scheduler.trigger import CronTrigger, TickExecutor

logger = logging.getLogger(__name__)

SUBMIT_ATTEMPTS = 5


def _never() -> None:
    """The jobs' function: never called (``TickExecutor`` hands ticks to the engine)."""


def jitter_delay(schedule_id: str, fire_time: datetime, jitter: float) -> float:
    """A delay in ``[0, jitter)`` s, the same for one tick on every node (a hand-over does not
    move it)."""
    if jitter <= 0:
        return 0.0
    digest = hashlib.sha256(f"{schedule_id}@{fire_time.isoformat()}".encode()).digest()
    return jitter * int.from_bytes(digest[:8], "big") / 2**64


class ScheduleEngine:
    """APScheduler (asyncio, memory job store) driven by the table; one job per active schedule."""

    def __init__(
        self,
        store: ScheduleStore,
        gateway: RunGateway,
        clock: Clock,
        *,
        on_time: float = 2.0,
        takeover_grace: float = 10.0,
        flush_interval: float = 0.1,
        submit_backoff: float = 0.2,
    ) -> None:
        self._store = store
        self._gateway = gateway
        self._clock = clock
        self._on_time = on_time
        self._takeover_grace = max(on_time, takeover_grace)
        self._taking_over = False
        self._submit_backoff = submit_backoff
        self._log = TickLog(store, interval=flush_interval)
        self._schedules: dict[str, Schedule] = {}
        self._last_fire: dict[str, datetime] = {}
        self._last_run: dict[str, str | None] = {}
        # overlap "skip": a tick's check and its submit as one step per schedule. Ticks are
        # separate tasks; without this, a tick whose predecessor is still being submitted (a
        # slow commit) sees the run before it, finished, and starts a second run alongside.
        self._skip_locks: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._scheduler: AsyncIOScheduler | None = None

    @property
    def job_count(self) -> int:
        return len(self._schedules)

    async def start(self) -> None:
        self._scheduler = AsyncIOScheduler(
            event_loop=asyncio.get_running_loop(),
            timezone=UTC,
            executors={"default": TickExecutor(self._on_tick)},
            job_defaults={"coalesce": False, "misfire_grace_time": None, "max_instances": 1},
        )
        self._scheduler.start()
        self._log.start()
        # The first look at the table is the take-over: ticks of the last ``takeover_grace`` s
        # may have died with the previous leader (see ``scheduler.misfire``).
        self._taking_over = True
        try:
            await self.sync()
        finally:
            self._taking_over = False

    async def aclose(self) -> None:
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
            self._scheduler = None
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=10)
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._log.aclose()

    async def sync(self) -> None:
        """Bring the jobs in line with the table: add, rebuild or remove what changed."""
        scheduler = self._scheduler
        if scheduler is None:
            return
        stored = {schedule.key: schedule for schedule in await self._store.list_schedules(None)}
        for key in list(self._schedules):
            current = stored.get(key)
            if current is None or current.paused:
                del self._schedules[key]
                self._last_fire.pop(key, None)
                try:
                    scheduler.remove_job(key)
                except JobLookupError:
                    pass
        for schedule in stored.values():
            known = self._schedules.get(schedule.key)
            if schedule.paused or (known is not None and known.revision == schedule.revision):
                continue
            self._adopt(scheduler, schedule)

    def _adopt(self, scheduler: AsyncIOScheduler, schedule: Schedule) -> None:
        """(Re)build the job of ``schedule``; ticks it missed go through its misfire policy."""
        cron = schedule.parsed_cron()
        now = self._clock.now()
        since = max(
            filter(
                None,
                (schedule.last_fire_at, schedule.updated_at, self._last_fire.get(schedule.key)),
            )
        )
        plan = plan_catch_up(
            cron,
            schedule.misfire_policy,
            schedule.misfire_grace,
            since,
            now,
            on_time=self._takeover_grace if self._taking_over else self._on_time,
            delay=lambda tick: jitter_delay(schedule.id, tick, schedule.jitter),
            # With jitter, a later tick can be recorded before an earlier one was submitted.
            recheck=schedule.jitter + self._on_time if self._taking_over else 0.0,
        )
        self._schedules[schedule.key] = schedule
        self._last_run.setdefault(schedule.key, schedule.last_run_id)
        if plan.last_tick is not None:
            self._last_fire[schedule.key] = plan.last_tick
        next_fire = cron.next_after(max(now, plan.last_tick or now))
        if plan.missed:
            logger.info(
                "schedule %s: %d tick(s) missed while no scheduler ran (policy %s)",
                schedule.id,
                plan.missed,
                schedule.misfire_policy.value,
            )
        # Also with nothing missed: the new leader's next fire time replaces the stored one.
        self._log.add(
            TickRecord(
                schedule.id,
                schedule.owner_id,
                # A tick still to run is recorded when it is submitted, not before.
                last_fire_at=None if plan.last_tick in plan.run else plan.last_tick,
                next_fire_at=next_fire,
                missed=plan.missed,
            )
        )
        if plan.run:
            self._spawn(self._fire_in_order(schedule, plan.run), f"catch-up:{schedule.id}")
        if next_fire is None:
            return
        scheduler.add_job(
            _never,
            trigger=CronTrigger(cron),
            id=schedule.key,
            name=schedule.key,
            next_run_time=next_fire,
            replace_existing=True,
        )

    def _on_tick(self, key: str, fire_time: datetime) -> None:
        schedule = self._schedules.get(key)
        if schedule is not None:
            self._spawn(self._fire(schedule, fire_time.astimezone(UTC)), f"tick:{key}")

    def _spawn(self, coroutine: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coroutine, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _fire_in_order(self, schedule: Schedule, fire_times: list[datetime]) -> None:
        for fire_time in fire_times:
            await self._fire(schedule, fire_time)

    async def _fire(self, schedule: Schedule, fire_time: datetime) -> None:
        next_fire = schedule.parsed_cron().next_after(fire_time)
        try:
            # The jitter itself (not a wait for a condition), up to the tick's delayed moment: a
            # tick caught up after a hand-over does not wait its whole delay again.
            delay = jitter_delay(schedule.id, fire_time, schedule.jitter)
            remaining = (fire_time - self._clock.now()).total_seconds() + delay
            if remaining > 0:
                await asyncio.sleep(remaining)
            if schedule.overlap_policy == OverlapPolicy.SKIP:
                lock = self._skip_locks.setdefault(schedule.key, asyncio.Lock())
                async with lock:
                    if await self._still_running(schedule):
                        self._record(schedule, fire_time, next_fire, skipped=1)
                        return
                    submitted = await self._submit(schedule, fire_time)
                    self._last_run[schedule.key] = submitted.id
            else:
                submitted = await self._submit(schedule, fire_time)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.error(
                "schedule %s: tick %s missed: could not be submitted (%s)",
                schedule.id,
                isoformat(fire_time),
                type(exc).__name__,
            )
            self._record(schedule, fire_time, next_fire, missed=1)
            return
        self._last_run[schedule.key] = submitted.id
        self._record(
            schedule, fire_time, next_fire, run_id=submitted.id, fired=int(submitted.created)
        )

    def _record(
        self,
        schedule: Schedule,
        fire_time: datetime,
        next_fire: datetime | None,
        *,
        run_id: str | None = None,
        fired: int = 0,
        skipped: int = 0,
        missed: int = 0,
    ) -> None:
        if fire_time > self._last_fire.get(schedule.key, fire_time - timedelta(seconds=1)):
            self._last_fire[schedule.key] = fire_time
        if self._schedules.get(schedule.key) is not schedule:
            # Paused, changed or deleted while this tick was in flight: the stored next fire
            # time is the new definition's (written with it), not this one's.
            next_fire = None
        self._log.add(
            TickRecord(
                schedule.id,
                schedule.owner_id,
                last_fire_at=fire_time,
                next_fire_at=next_fire,
                last_run_id=run_id,
                fired=fired,
                skipped=skipped,
                missed=missed,
            )
        )

    async def _still_running(self, schedule: Schedule) -> bool:
        """Whether the schedule's latest run is unfinished: the one this leader started, or the
        one recorded in the table (a run-now on any node, or the previous leader's)."""
        candidates = {self._last_run.get(schedule.key)}
        with contextlib.suppress(NotFound):
            candidates.add((await self._store.get(schedule.id, schedule.owner_id)).last_run_id)
        for run_id in sorted(filter(None, candidates)):
            record = await self._gateway.get(run_id)
            if record is not None and not record.finished:
                return True
        return False

    async def _submit(self, schedule: Schedule, fire_time: datetime) -> SubmittedRun:
        request = tick_request(schedule, fire_time)
        for attempt in range(1, SUBMIT_ATTEMPTS + 1):
            try:
                return await self._gateway.submit(request)
            except Exception:
                # Another leader may have inserted the same key between our check and insert
                # (unique violation): the retry finds its run. Or the database blinked.
                if attempt == SUBMIT_ATTEMPTS:
                    raise
                logger.warning("schedule %s: submitting tick failed; retrying", schedule.id)
                await asyncio.sleep(self._submit_backoff * attempt)  # backoff between attempts
        raise AssertionError("unreachable")
