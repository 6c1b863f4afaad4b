"""Exactly one active scheduler per database.

PostgreSQL: a session advisory lock held on a dedicated connection for as long as this node
leads. If that connection drops, the server releases the lock at once and a standby takes it; the
old leader notices on its next check (the same connection answers the change poll) and stops.
SQLite: an exclusive ``flock`` on a file next to the database (one machine by construction); the
kernel releases it when the process dies.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from sqlalchemy import select

from core.db import Database
from core.locks import AdvisoryNamedLock, FileNamedLock
from scheduler.tables import schedule_changes

ADVISORY_LOCK_KEY = 0x5357_4348_4544  # "SWCHED": one key per database
"""The key of the session advisory lock the leader holds."""


class LeadershipLost(Exception):
    """The lock (or the connection holding it) is gone: stop scheduling."""


class Leadership(Protocol):
    """A lock that at most one node holds at a time."""

    async def try_acquire(self) -> bool:
        """Take the lock if it is free; ``True`` when this node now leads."""
        ...

    async def revision(self) -> int:
        """The schedules' change counter, read through the lock holder's own connection where
        there is one; raises :class:`LeadershipLost` when the lock can no longer be trusted."""
        ...

    async def release(self) -> None: ...


class AdvisoryLock:
    """PostgreSQL session advisory lock on a connection of its own (autocommit: no long
    transaction holds a snapshot while this node leads); ``core.locks`` holds it."""

    def __init__(self, database: Database) -> None:
        self._lock = AdvisoryNamedLock(database, "scheduler", key=ADVISORY_LOCK_KEY)

    async def try_acquire(self) -> bool:
        return await self._lock.try_acquire()

    async def revision(self) -> int:
        conn = self._lock.connection
        if conn is None:
            raise LeadershipLost("not holding the scheduler lock")
        try:
            value = await conn.scalar(select(schedule_changes.c.revision))
        except Exception as exc:
            raise LeadershipLost(
                f"the connection holding the scheduler lock failed: {exc}"
            ) from exc
        return int(value or 0)

    async def release(self) -> None:
        await self._lock.release()


class FileLock:
    """SQLite: ``flock`` on ``<database file>.scheduler.lock`` (``core.locks``)."""

    def __init__(self, database: Database, path: Path) -> None:
        self._db = database
        self._lock = FileNamedLock(path)

    async def try_acquire(self) -> bool:
        return await self._lock.try_acquire()

    async def revision(self) -> int:
        if not self._lock.held:
            raise LeadershipLost("not holding the scheduler lock")
        async with self._db.read() as conn:
            value = await conn.scalar(select(schedule_changes.c.revision))
        return int(value or 0)

    async def release(self) -> None:
        await self._lock.release()


def leadership_for(database: Database) -> Leadership:
    if database.is_sqlite:
        name = database.url.database or "switchboard.db"
        return FileLock(database, Path(f"{name}.scheduler.lock"))
    return AdvisoryLock(database)
