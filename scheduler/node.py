"""A node with the ``scheduler`` role: a standby until it takes the lock, then the leader until
it loses it (or stops)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from contextlib import AsyncExitStack

from core.clock import Clock
from core.db import Database
from core.ports import RunGateway
from scheduler.engine import ScheduleEngine
from scheduler.leadership import Leadership, LeadershipLost, leadership_for
from scheduler.service import ScheduleService
from scheduler.settings import SchedulerSettings
from scheduler.store import ScheduleStore

logger = logging.getLogger(__name__)


class SchedulerNode:
    """Standby → leader → (lock lost) → standby …, until :meth:`aclose`."""

    def __init__(
        self,
        leadership: Leadership,
        store: ScheduleStore,
        gateway: RunGateway,
        clock: Clock,
        settings: SchedulerSettings,
    ) -> None:
        """``settings``: the retry and poll periods, ``on_time`` and ``takeover_grace`` (see
        ``scheduler.misfire``) of the ``[scheduler]`` section."""
        self._leadership = leadership
        self._store = store
        self._gateway = gateway
        self._clock = clock
        self._settings = settings
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self.leading = asyncio.Event()
        self.engine: ScheduleEngine | None = None

    async def start(self, stack: AsyncExitStack) -> None:
        self._task = asyncio.create_task(self._run(), name="scheduler:node")
        stack.push_async_callback(self.aclose)

    def wake(self) -> None:
        """A schedule changed on this node: look at the table now, not at the next poll."""
        self._wake.set()

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            try:
                if await self._leadership.try_acquire():
                    await self._lead()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("scheduler: unexpected error; standing by")
            await asyncio.sleep(self._settings.standby_retry)  # retry period of a standby

    async def _lead(self) -> None:
        logger.info("scheduler: this node is the leader")
        engine = ScheduleEngine(
            self._store,
            self._gateway,
            self._clock,
            on_time=self._settings.on_time,
            takeover_grace=self._settings.takeover_grace,
        )
        try:
            seen = await self._leadership.revision()
            await engine.start()
            self.engine = engine
            self.leading.set()
            while True:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._settings.poll_interval):
                        await self._wake.wait()
                self._wake.clear()
                revision = await self._leadership.revision()
                if revision != seen:
                    seen = revision
                    await engine.sync()
        except LeadershipLost as exc:
            logger.error("scheduler: leadership lost (%s); stopping the schedules here", exc)
        finally:
            self.leading.clear()
            self.engine = None
            await self._step_down(engine)

    async def _step_down(self, engine: ScheduleEngine) -> None:
        await engine.aclose()
        await self._leadership.release()


def scheduler_node(
    database: Database,
    schedules: ScheduleService,
    gateway: RunGateway,
    clock: Clock,
    settings: SchedulerSettings,
) -> SchedulerNode:
    """A node for ``database`` whose leader wakes at once on changes made through ``schedules``."""
    node = SchedulerNode(
        leadership_for(database),
        schedules.store,
        gateway,
        clock,
        settings,
    )
    schedules.on_change(node.wake)
    return node
