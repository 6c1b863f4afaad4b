"""Inbox accepts: the SQL that stores arriving events, inside the intake group commit.

``IntakeWriter`` calls :meth:`InboxWriter.write_in` in the transaction that also writes the run
requests of its batch, so runs and events that arrived together cost one commit (one fsync on
SQLite). A dedupe key seen before (in the batch, stored, or stored meanwhile by another node on
PostgreSQL) answers the first event; an event of a suspended trigger is stored ``held``.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.ext.asyncio import AsyncConnection

from core.db import Database
from core.errors import Conflict
from core.inbox import AcceptedEvent, ArrivingEvent, EventStatus
from dispatch.inbox_tables import SUSPENDED, EventIds, inbox_events, inbox_triggers


class InboxWriter:
    """Writes accepted events; wakes this node's inbox processor once they are committed."""

    def __init__(self, database: Database, ids: EventIds | None = None) -> None:
        self._db = database
        self.ids = ids or EventIds()
        self.work_available = asyncio.Event()
        """Set when events this node stored may be processed (after their commit)."""

    async def write_in(
        self, conn: AsyncConnection, events: list[ArrivingEvent], now: datetime
    ) -> list[AcceptedEvent | BaseException]:
        """Store ``events`` in ``conn``'s transaction; one answer per event, in order.

        ``now`` must be read inside the transaction (after its locks): it orders nothing here,
        but ``received_at`` is what operators see next to the runs' times.
        """
        results: list[AcceptedEvent | BaseException | None] = [None] * len(events)
        suspended = await suspended_triggers(conn, self._db, {e.trigger for e in events})
        rows: list[dict[str, Any]] = []
        by_key: dict[str, list[int]] = {}
        for index, event in enumerate(events):
            key = event.dedupe_key
            if key is not None and key in by_key:
                by_key[key].append(index)
                continue
            held = event.trigger in suspended
            event_id = self.ids.next()
            row = {
                "id": event_id,
                "trigger": event.trigger,
                "dedupe_key": key,
                "ordering_key": event.ordering_key,
                "status": EventStatus.HELD if held else EventStatus.PENDING,
                "received_at": now,
                "headers": dict(event.headers),
                "body": event.body,
                "attempts": 0,
            }
            rows.append(row)
            results[index] = AcceptedEvent(event_id, duplicate=False, held=held)
            if key is not None:
                by_key[key] = [index]
        for indexes in by_key.values():  # the same key twice in this batch: one event
            first = results[indexes[0]]
            if isinstance(first, AcceptedEvent):
                for index in indexes[1:]:
                    results[index] = AcceptedEvent(first.id, duplicate=True, held=first.held)
        if rows:
            skipped = await self._insert(conn, rows)
            if skipped:
                await self._answer_skipped(conn, skipped, events, results)
        return [r if r is not None else RuntimeError("inbox event not handled") for r in results]

    async def _insert(self, conn: AsyncConnection, rows: list[dict[str, Any]]) -> set[str]:
        """Insert ``rows``; the dedupe keys skipped because they were stored before.

        One statement (``ON CONFLICT DO NOTHING RETURNING``) instead of a look-up and an insert:
        an intake batch pays per statement, and a repeated key is the rare case. On PostgreSQL
        it also waits for a concurrent transaction inserting the same key, then skips it.
        """
        keyed = {row["dedupe_key"] for row in rows if row["dedupe_key"] is not None}
        if not keyed:
            await conn.execute(inbox_events.insert(), rows)
            return set()
        dialect = sqlite_dialect if self._db.is_sqlite else postgresql
        inserted = await conn.execute(
            dialect.insert(inbox_events)
            .on_conflict_do_nothing(index_elements=[inbox_events.c.dedupe_key])
            .returning(inbox_events.c.dedupe_key),
            rows,
        )
        return keyed - {key for (key,) in inserted}

    async def _answer_skipped(
        self,
        conn: AsyncConnection,
        keys: set[str],
        events: list[ArrivingEvent],
        results: list[AcceptedEvent | BaseException | None],
    ) -> None:
        stored = await conn.execute(
            select(inbox_events.c.dedupe_key, inbox_events.c.id, inbox_events.c.status).where(
                inbox_events.c.dedupe_key.in_(list(keys))
            )
        )
        earlier = {key: (event_id, status) for key, event_id, status in stored}
        for index, event in enumerate(events):
            key = event.dedupe_key
            if key is None or key not in keys:
                continue
            if key in earlier:
                event_id, status = earlier[key]
                results[index] = AcceptedEvent(
                    event_id, duplicate=True, held=status == EventStatus.HELD
                )
            else:  # the conflicting row is gone again (pruned): the source retries
                results[index] = Conflict(f"inbox event {key!r} is being written elsewhere")


async def suspended_triggers(
    conn: AsyncConnection, database: Database, names: set[str]
) -> set[str]:
    """Which of ``names`` are suspended, read under a share lock on PostgreSQL.

    The lock makes an accept and a resume of the same trigger take turns: without it, an accept
    that read "suspended" could store its event ``held`` after the resume moved the held events
    back to pending, and the event would wait forever.
    """
    query = select(inbox_triggers.c.name, inbox_triggers.c.state).where(
        inbox_triggers.c.name.in_(sorted(names))
    )
    if not database.is_sqlite:
        query = query.with_for_update(read=True)
    return {name for name, state in await conn.execute(query) if state == SUSPENDED}
