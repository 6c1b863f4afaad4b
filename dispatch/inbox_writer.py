"""Inbox accepts: the SQL that stores arriving events, inside the intake group commit.

``IntakeWriter`` calls :meth:`InboxWriter.write_in` in the transaction that also writes the run
requests of its batch, so runs and events that arrived together cost one commit (one fsync on
SQLite). A dedupe key seen before (in the batch, stored, or stored meanwhile by another node on
PostgreSQL) answers the first event; an event of a suspended trigger is stored ``held``. On
SQLite a batch's events are one statement, handed to the driver in one call (sqlite_driver).
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection

from core.db import Database
from core.errors import Conflict
from core.inbox import AcceptedEvent, ArrivingEvent, EventStatus
from dispatch import sqlite_driver
from dispatch.inbox_tables import SUSPENDED, EventIds, inbox_events, inbox_triggers
from dispatch.sqlite_driver import PlainValues


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
        rows: list[dict[str, Any]] = []
        at: list[int] = []  # the event each row stores
        by_key: dict[str, list[int]] = {}
        for index, event in enumerate(events):
            key = event.dedupe_key
            if key is not None and key in by_key:
                by_key[key].append(index)
                continue
            rows.append(
                {
                    "id": self.ids.next(),
                    "trigger": event.trigger,
                    "dedupe_key": key,
                    "ordering_key": event.ordering_key,
                    "status": EventStatus.PENDING,
                    "received_at": now,
                    "headers": dict(event.headers),
                    "body": event.body,
                    "attempts": 0,
                }
            )
            at.append(index)
            if key is not None:
                by_key[key] = [index]
        skipped: set[str] = set()
        if rows:
            if self._db.is_sqlite:
                held, skipped = await _insert_sqlite(conn, rows)
            else:
                held, skipped = await self._insert(conn, rows)
            for index, row in zip(at, rows, strict=True):
                results[index] = AcceptedEvent(row["id"], duplicate=False, held=row["id"] in held)
        for indexes in by_key.values():  # the same key twice in this batch: one event
            first = results[indexes[0]]
            if isinstance(first, AcceptedEvent):
                for index in indexes[1:]:
                    results[index] = AcceptedEvent(first.id, duplicate=True, held=first.held)
        if skipped:
            await self._answer_skipped(conn, skipped, events, results)
        return [r if r is not None else RuntimeError("inbox event not handled") for r in results]

    async def _insert(
        self, conn: AsyncConnection, rows: list[dict[str, Any]]
    ) -> tuple[set[str], set[str]]:
        """PostgreSQL: insert ``rows``; (ids stored held, dedupe keys skipped: stored before).

        One statement (``ON CONFLICT DO NOTHING RETURNING``) instead of a look-up and an insert:
        an intake batch pays per statement, and a repeated key is the rare case. It also waits
        for a concurrent transaction inserting the same key, then skips it.
        """
        suspended = await suspended_triggers(conn, self._db, {row["trigger"] for row in rows})
        held = set()
        for row in rows:
            if row["trigger"] in suspended:
                row["status"] = EventStatus.HELD
                held.add(row["id"])
        keyed = {row["dedupe_key"] for row in rows if row["dedupe_key"] is not None}
        if not keyed:
            await conn.execute(inbox_events.insert(), rows)
            return held, set()
        inserted = await conn.execute(
            postgresql.insert(inbox_events)
            .on_conflict_do_nothing(index_elements=[inbox_events.c.dedupe_key])
            .returning(inbox_events.c.dedupe_key),
            rows,
        )
        return held, keyed - {key for (key,) in inserted}

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


_SQLITE_COLUMNS = ("id", "trigger", "dedupe_key", "ordering_key", "received_at", "headers", "body")
_SQLITE_ROWS_PER_STATEMENT = 1000  # 7 parameters a row, far below SQLite's 32,766
_SQLITE_HELD = EventStatus.HELD.value


def _sqlite_insert(count: int) -> str:
    """One statement for ``count`` rows: the suspension check, the insert, the dedupe skip.

    SQLite has one writer and this runs under its lock (``BEGIN IMMEDIATE``), so reading the
    triggers' state in the insert itself is as safe as the share lock PostgreSQL needs, and it
    costs no statement of its own (the intake batch pays per statement). ``WHERE true``: SQLite's
    rule for an upsert on ``INSERT ... SELECT`` (its parser needs it before ``ON CONFLICT``).
    """
    values = ", ".join(["(?, ?, ?, ?, ?, ?, ?)"] * count)
    # Only placeholders and our own constants are formatted in.
    return (
        "INSERT INTO inbox_events (id, trigger, dedupe_key, ordering_key, status, received_at, "  # noqa: S608
        "headers, body, attempts) "
        "SELECT column1, column2, column3, column4, "
        f"CASE WHEN column2 IN (SELECT name FROM inbox_triggers WHERE state = '{SUSPENDED}') "
        f"THEN '{_SQLITE_HELD}' ELSE '{EventStatus.PENDING.value}' END, "
        f"column5, column6, column7, 0 FROM (VALUES {values}) WHERE true "
        "ON CONFLICT (dedupe_key) DO NOTHING RETURNING id, status"
    )


async def _insert_sqlite(
    conn: AsyncConnection, rows: list[dict[str, Any]]
) -> tuple[set[str], set[str]]:
    """SQLite: insert ``rows`` in one driver call each 1,000; (ids stored held, keys skipped)."""
    plain = PlainValues()
    held: set[str] = set()
    stored: set[str] = set()
    for start in range(0, len(rows), _SQLITE_ROWS_PER_STATEMENT):
        chunk = rows[start : start + _SQLITE_ROWS_PER_STATEMENT]
        params = [plain(row[column]) for row in chunk for column in _SQLITE_COLUMNS]
        for event_id, status in await sqlite_driver.fetchall(
            conn, _sqlite_insert(len(chunk)), params
        ):
            stored.add(event_id)
            if status == _SQLITE_HELD:
                held.add(event_id)
    skipped = {
        row["dedupe_key"]
        for row in rows
        if row["id"] not in stored and row["dedupe_key"] is not None
    }
    return held, skipped
