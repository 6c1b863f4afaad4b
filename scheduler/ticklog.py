"""Fire state written in batches: at 100 ticks a second, one UPDATE per tick would cost more
than the ticks. A tick's run request is committed before its state is recorded here, so a leader
that dies with unflushed state loses only counters and ``last_fire_at`` progress; the next leader
re-submits those ticks and the idempotency key turns them into the runs they already made."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from scheduler.store import ScheduleStore, TickRecord

logger = logging.getLogger(__name__)


class TickLog:
    """Merges :class:`TickRecord` per schedule and flushes every ``interval`` seconds."""

    def __init__(self, store: ScheduleStore, *, interval: float = 0.1) -> None:
        self._store = store
        self._interval = interval
        self._pending: dict[tuple[str, str], TickRecord] = {}
        self._task: asyncio.Task[None] | None = None
        self._due = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.create_task(self._flush_loop(), name="scheduler:tick-log")

    def add(self, record: TickRecord) -> None:
        key = (record.owner_id, record.schedule_id)
        pending = self._pending.get(key)
        if pending is None:
            self._pending[key] = record
        else:
            pending.merge(record)
        self._due.set()

    async def flush(self) -> None:
        batch, self._pending = list(self._pending.values()), {}
        try:
            await self._store.record(batch)
        except Exception:
            logger.exception("recording the state of %d schedules failed; retrying", len(batch))
            for record in batch:
                self.add(record)
            raise

    async def _flush_loop(self) -> None:
        while True:
            await self._due.wait()
            self._due.clear()
            await asyncio.sleep(self._interval)  # gather the ticks of this interval
            with contextlib.suppress(Exception):
                await self.flush()

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self.flush()
