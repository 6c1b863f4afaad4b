"""Retention (a ``core.channels.Component`` on worker nodes): old runs and inbox events go.

Finished runs (with their logs and sent replies) and finished inbox events (processed, ignored,
failed, discarded) are deleted by age and by count, n8n's defaults (14 days, 10,000); an inbox
event's payload goes earlier. Never deleted: an unfinished run, a run whose reply is still
waiting in the outbox, a pending or held event, anything younger than ``retention_min_age``
when only the count says so. Rows of other tables that point at a run or a delivery (logs,
WhatsApp message states…) are found through the shared metadata's foreign keys and go first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, Table, and_, delete, exists, or_, select, update

from core.clock import Clock
from core.db import Database
from core.inbox import EventStatus
from core.models import FINISHED_STATUSES
from core.tables import metadata
from dispatch.inbox_tables import inbox_events
from dispatch.settings import InboxSettings, RuntimeSettings
from dispatch.tables import deliveries, runs

logger = logging.getLogger(__name__)

CHUNK = 2000
"""Rows deleted per transaction: a pass never holds the (SQLite) writer for long."""
FINISHED_EVENTS = (
    EventStatus.PROCESSED,
    EventStatus.IGNORED,
    EventStatus.FAILED,
    EventStatus.DISCARDED,
)
UNDELIVERED = ("pending", "sending")  # dispatch/outbox.py


@dataclass(frozen=True, slots=True)
class Pruned:
    runs: int = 0
    events: int = 0
    bodies: int = 0


class Retention:
    """Prunes every ``interval`` seconds; :meth:`prune` is one pass (tests call it directly)."""

    def __init__(
        self, database: Database, clock: Clock, runtime: RuntimeSettings, inbox: InboxSettings
    ) -> None:
        """Runs by ``runtime``'s limits, inbox events by ``inbox``'s (both documented keys)."""
        self._db = database
        self._clock = clock
        self._runtime = runtime
        self._inbox = inbox
        self._task: asyncio.Task[None] | None = None

    async def start(self, stack: AsyncExitStack) -> None:
        self._task = asyncio.create_task(self._loop(), name="retention")
        stack.push_async_callback(self.aclose)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        while True:
            try:
                pruned = await self.prune()
                if pruned.runs or pruned.events or pruned.bodies:
                    logger.info(
                        "retention: deleted %d runs and %d inbox events, dropped %d payloads",
                        pruned.runs,
                        pruned.events,
                        pruned.bodies,
                    )
            except Exception:
                logger.exception("retention pass failed; trying again later")
            await asyncio.sleep(self._runtime.retention_interval)

    async def prune(self) -> Pruned:
        runtime, inbox = self._runtime, self._inbox
        now = self._clock.now()
        young = now - timedelta(seconds=runtime.retention_min_age)
        bodies = await self._drop_bodies(now - timedelta(days=inbox.body_max_age_days))
        events = await self._delete_events(
            inbox_events.c.received_at < now - timedelta(days=inbox.max_age_days)
        )
        cut = await self._nth_newest_event(inbox.max_count)
        if cut is not None:
            events += await self._delete_events(
                and_(inbox_events.c.id <= cut, inbox_events.c.received_at < young)
            )
        removed = await self._delete_runs(
            runs.c.completed_at < now - timedelta(days=runtime.runs_max_age_days)
        )
        nth = await self._nth_newest_run(runtime.runs_max_count)
        if nth is not None:
            created_at, run_id = nth
            older = or_(
                runs.c.created_at < created_at,
                and_(runs.c.created_at == created_at, runs.c.id <= run_id),
            )
            removed += await self._delete_runs(and_(older, runs.c.created_at < young))
        return Pruned(runs=removed, events=events, bodies=bodies)

    # ---- inbox --------------------------------------------------------------------------------

    async def _drop_bodies(self, before: datetime) -> int:
        async with self._db.write() as conn:
            result = await conn.execute(
                update(inbox_events)
                .where(
                    inbox_events.c.status.in_(FINISHED_EVENTS),
                    inbox_events.c.received_at < before,
                    inbox_events.c.body.is_not(None),
                )
                .values(body=None)
            )
        return int(result.rowcount)

    async def _delete_events(self, condition: ColumnElement[bool]) -> int:
        chosen = (
            select(inbox_events.c.id)
            .where(inbox_events.c.status.in_(FINISHED_EVENTS), condition)
            .limit(CHUNK)
        )
        total = 0
        while True:
            async with self._db.write() as conn:
                ids = list((await conn.execute(chosen)).scalars())
                if ids:
                    await conn.execute(delete(inbox_events).where(inbox_events.c.id.in_(ids)))
            total += len(ids)
            if len(ids) < CHUNK:
                return total

    async def _nth_newest_event(self, keep: int) -> str | None:
        """The id of the newest finished event beyond the ``keep`` newest ones."""
        async with self._db.read() as conn:
            row = (
                await conn.execute(
                    select(inbox_events.c.id)
                    .where(inbox_events.c.status.in_(FINISHED_EVENTS))
                    .order_by(inbox_events.c.id.desc())
                    .offset(keep)
                    .limit(1)
                )
            ).first()
        return None if row is None else str(row[0])

    # ---- runs ---------------------------------------------------------------------------------

    def _prunable_runs(self, condition: ColumnElement[bool]) -> Select[Any]:
        return (
            select(runs.c.id)
            .where(
                runs.c.status.in_([status.value for status in FINISHED_STATUSES]),
                ~exists().where(
                    deliveries.c.run_id == runs.c.id, deliveries.c.status.in_(UNDELIVERED)
                ),
                condition,
            )
            .limit(CHUNK)
        )

    async def _nth_newest_run(self, keep: int) -> tuple[datetime, str] | None:
        async with self._db.read() as conn:
            row = (
                await conn.execute(
                    select(runs.c.created_at, runs.c.id)
                    .where(runs.c.status.in_([status.value for status in FINISHED_STATUSES]))
                    .order_by(runs.c.created_at.desc(), runs.c.id.desc())
                    .offset(keep)
                    .limit(1)
                )
            ).first()
        return None if row is None else (row[0], str(row[1]))

    async def _delete_runs(self, condition: ColumnElement[bool]) -> int:
        chosen = self._prunable_runs(condition)
        total = 0
        while True:
            async with self._db.write() as conn:
                ids = list((await conn.execute(chosen)).scalars())
                if ids:
                    await _delete_with_dependents(conn, runs, ids)
            total += len(ids)
            if len(ids) < CHUNK:
                return total


async def _delete_with_dependents(conn: Any, table: Table, ids: list[Any]) -> None:
    """Delete ``table``'s rows ``ids`` after every row that refers to them (foreign keys of the
    shared metadata: a package's own tables are found without this module naming them)."""
    [key] = list(table.primary_key.columns)
    for child, column in _referring(table):
        child_ids: list[Any] = []
        if child.primary_key.columns and _referring(child):
            [child_key] = list(child.primary_key.columns)
            child_ids = list(
                (await conn.execute(select(child_key).where(column.in_(ids)))).scalars()
            )
            if child_ids:
                await _delete_with_dependents(conn, child, child_ids)
        else:
            await conn.execute(delete(child).where(column.in_(ids)))
    await conn.execute(delete(table).where(key.in_(ids)))


def _referring(table: Table) -> list[tuple[Table, Any]]:
    return [
        (child, fk.parent)
        for child in metadata.sorted_tables
        for fk in child.foreign_keys
        if fk.column.table is table and child is not table
    ]
