"""Exactly one active scheduler per database.

PostgreSQL: a session advisory lock held on a dedicated connection for as long as this node
leads. If that connection drops, the server releases the lock at once and a standby takes it; the
old leader notices on its next check (the same connection answers the change poll) and stops.
SQLite: an exclusive ``flock`` on a file next to the database (one machine by construction); the
kernel releases it when the process dies.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Protocol

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from core.db import Database
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
    transaction holds a snapshot while this node leads)."""

    def __init__(self, database: Database) -> None:
        self._db = database
        self._conn: AsyncConnection | None = None

    async def try_acquire(self) -> bool:
        conn = await self._db.engine.connect()
        try:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            held = await conn.scalar(
                text("SELECT pg_try_advisory_lock(:key)"), {"key": ADVISORY_LOCK_KEY}
            )
        except BaseException:
            await conn.close()
            raise
        if not held:
            await conn.close()
            return False
        self._conn = conn
        return True

    async def revision(self) -> int:
        if self._conn is None:
            raise LeadershipLost("not holding the scheduler lock")
        try:
            value = await self._conn.scalar(select(schedule_changes.c.revision))
        except Exception as exc:
            raise LeadershipLost(
                f"the connection holding the scheduler lock failed: {exc}"
            ) from exc
        return int(value or 0)

    async def release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            await conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": ADVISORY_LOCK_KEY})
            await conn.close()
        except Exception:
            # Never hand a connection that may still hold the lock back to the pool.
            with contextlib.suppress(Exception):
                await conn.invalidate()
                await conn.close()


class FileLock:
    """SQLite: ``flock`` on ``<database file>.scheduler.lock``."""

    def __init__(self, database: Database, path: Path) -> None:
        self._db = database
        self._path = path
        self._fd: int | None = None

    async def try_acquire(self) -> bool:
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    async def revision(self) -> int:
        if self._fd is None:
            raise LeadershipLost("not holding the scheduler lock")
        async with self._db.read() as conn:
            value = await conn.scalar(select(schedule_changes.c.revision))
        return int(value or 0)

    async def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def leadership_for(database: Database) -> Leadership:
    if database.is_sqlite:
        name = database.url.database or "switchboard.db"
        return FileLock(database, Path(f"{name}.scheduler.lock"))
    return AdvisoryLock(database)
