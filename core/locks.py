"""A named lock that at most one node of the cluster holds (one IMAP connection per mailbox).

The same two mechanisms as the scheduler's leadership (``scheduler/leadership.py``):
PostgreSQL, a session advisory lock on a connection of its own, released by the server the
moment that connection drops (a SIGKILLed node frees it at once); SQLite (one machine by
construction), an exclusive ``flock`` on a file beside the database, which the kernel releases
when the process dies.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from pathlib import Path
from typing import Protocol

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from core.db import Database


class LockLost(Exception):
    """The lock (or the connection holding it) is gone: stop what it guards."""


class NamedLock(Protocol):
    """At most one holder at a time across every node sharing the database."""

    async def try_acquire(self) -> bool:
        """Take the lock if it is free; ``True`` when this node now holds it."""
        ...

    async def check(self) -> None:
        """Raises :class:`LockLost` when the lock can no longer be trusted."""
        ...

    async def release(self) -> None: ...


def advisory_key(name: str) -> int:
    """A signed 64-bit advisory-lock key for ``name`` (PostgreSQL's ``bigint``)."""
    digest = hashlib.blake2b(name.encode(), digest_size=8, person=b"swb-lock").digest()
    return int.from_bytes(digest, "big", signed=True)


class AdvisoryNamedLock:
    """PostgreSQL: ``pg_try_advisory_lock`` on an autocommit connection kept while held."""

    def __init__(self, database: Database, name: str, *, key: int | None = None) -> None:
        self._db = database
        self._key = advisory_key(name) if key is None else key
        self._name = name
        self._conn: AsyncConnection | None = None

    @property
    def connection(self) -> AsyncConnection | None:
        """The connection holding the lock (``None`` when not held): read through it to know
        the lock still holds while reading."""
        return self._conn

    async def try_acquire(self) -> bool:
        conn = await self._db.engine.connect()
        try:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            held = await conn.scalar(text("SELECT pg_try_advisory_lock(:key)"), {"key": self._key})
        except BaseException:
            await conn.close()
            raise
        if not held:
            await conn.close()
            return False
        self._conn = conn
        return True

    async def check(self) -> None:
        if self._conn is None:
            raise LockLost(f"not holding the lock {self._name}")
        try:
            await self._conn.scalar(text("SELECT 1"))
        except Exception as exc:
            raise LockLost(f"the connection holding the lock {self._name} failed: {exc}") from exc

    async def release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            await conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": self._key})
            await conn.close()
        except Exception:
            # Never hand a connection that may still hold the lock back to the pool.
            with contextlib.suppress(Exception):
                await conn.invalidate()
                await conn.close()


class FileNamedLock:
    """SQLite: ``flock`` on a file of its own (per open file, so two nodes in one process
    exclude each other too)."""

    def __init__(self, path: Path) -> None:
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

    @property
    def held(self) -> bool:
        return self._fd is not None

    async def check(self) -> None:
        if self._fd is None:
            raise LockLost(f"not holding the lock {self._path}")

    async def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def named_lock(database: Database, name: str) -> NamedLock:
    """The lock ``name`` for this database (a file ``<database>.<name>.lock`` on SQLite)."""
    if database.is_sqlite:
        base = database.url.database or "switchboard.db"
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in name)
        return FileNamedLock(Path(f"{base}.{safe}.lock"))
    return AdvisoryNamedLock(database, name)
