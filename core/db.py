"""The database: one object that hands out read and write connections.

SQLite allows one writer at a time, and a deferred transaction that later tries to write fails at
once with "database is locked" instead of waiting. So on SQLite every write transaction starts with
``BEGIN IMMEDIATE`` on a single writer connection (the writer queue lives in this process, not in
SQLite's busy loop), and reads use a small pool of their own. PostgreSQL uses one pool for both.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from sqlalchemy import Table, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.util import await_

from core.errors import SwitchboardError

logger = logging.getLogger(__name__)


class Database:
    """Read and write connections for one database URL."""

    def __init__(self, url: str, *, sqlite_synchronous: str = "FULL", echo: bool = False) -> None:
        self.url = make_url(url)
        self._maintenance: asyncio.Task[None] | None = None
        self.dialect = self.url.get_backend_name()
        if self.dialect == "sqlite":
            self._writer = self._sqlite_engine(url, sqlite_synchronous, pool_size=1, echo=echo)
            self._reader = self._sqlite_engine(url, sqlite_synchronous, pool_size=4, echo=echo)
        else:
            self._writer = create_async_engine(
                url, pool_size=10, max_overflow=10, pool_pre_ping=True, echo=echo
            )
            self._reader = self._writer

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @property
    def engine(self) -> AsyncEngine:
        """The writer engine (migrations and administration use it)."""
        return self._writer

    @staticmethod
    def _sqlite_engine(url: str, synchronous: str, *, pool_size: int, echo: bool) -> AsyncEngine:
        engine = create_async_engine(
            url,
            pool_size=pool_size,
            max_overflow=0,
            echo=echo,
            connect_args={"timeout": 30},
            # Every transaction here ends in an explicit COMMIT or ROLLBACK, so the pool's
            # reset-on-return ROLLBACK is a wasted round trip to the driver's thread.
            pool_reset_on_return=None,
        )

        @event.listens_for(engine.sync_engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
            # Take transaction control away from the driver so that BEGIN is ours to emit.
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA synchronous={synchronous}")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            # Checkpoints are not the writer's business: copying the WAL into the database file
            # and syncing it took the committing transaction hundreds of milliseconds under load.
            # `checkpoint()` does it from a reader connection instead (see Database.start).
            cursor.execute("PRAGMA wal_autocheckpoint=0")
            cursor.close()

        @event.listens_for(engine.sync_engine, "close")
        def _on_close(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
            # Python 3.11's sqlite3 closes with sqlite3_close_v2: while a statement is still
            # unfinished (a task cancelled between an UPDATE … RETURNING and its fetch, which
            # makes SQLAlchemy invalidate and close the connection) the connection lives on as
            # a zombie holding its write lock, and every later writer waits out busy_timeout
            # and fails ("database is locked"). A rollback first ends the transaction and
            # releases the lock whatever is still pending.
            with contextlib.suppress(Exception):
                dbapi_connection.rollback()

        @event.listens_for(engine.sync_engine, "begin")
        def _on_begin(connection: Any) -> None:
            # A task cancelled while its COMMIT or BEGIN was on the driver's thread (shutdown
            # cancels tasks) can hand the connection back inside a transaction nobody owns, and
            # the pool does not reset it (pool_reset_on_return=None): the next BEGIN would fail
            # with "cannot start a transaction within a transaction". Its owner saw it fail, so
            # rolling it back is what it expects.
            if connection.connection.driver_connection.in_transaction:
                logger.warning("rolling back a transaction abandoned on a pooled connection")
                connection.exec_driver_sql("ROLLBACK")
            # Straight to the driver: one hop to aiosqlite's thread where ``exec_driver_sql``
            # makes three (cursor, execute, close), and every write transaction begins here.
            # Unlike SQLAlchemy's execute, the driver call does not invalidate the connection
            # when its task is cancelled (or times out) meanwhile: the BEGIN still runs on the
            # thread (BEGIN IMMEDIATE may be waiting for another process's lock), and the
            # connection went back to the pool holding the write lock nobody would release
            # until this process's next write. Invalidating it, as SQLAlchemy does, rolls it
            # back (the close hook, queued behind the BEGIN) and discards it.
            driver = connection.connection.driver_connection
            try:
                await_(driver.execute("BEGIN IMMEDIATE" if pool_size == 1 else "BEGIN"))
            except BaseException as exc:
                if not isinstance(exc, Exception):
                    connection.invalidate(exc)
                raise

        return engine

    async def start(self, stack: AsyncExitStack, *, checkpoint_interval: float = 1.0) -> None:
        """Start background maintenance (SQLite: WAL checkpoints off the write path); the
        engines are disposed when ``stack`` closes."""
        stack.push_async_callback(self.dispose)
        if self.is_sqlite and self._maintenance is None:
            self._maintenance = asyncio.create_task(
                self._checkpoint_loop(checkpoint_interval), name="sqlite-checkpoints"
            )

    async def wait_until_reachable(self, limit: float) -> None:
        """Return once the database answers a query; wait up to ``limit`` seconds for one that
        is down or still starting (a node restarted while its PostgreSQL restarts), trying
        again with a growing pause. ``SwitchboardError`` naming the last failure after that."""
        deadline = asyncio.get_running_loop().time() + limit
        pause = 0.1
        while True:
            try:
                async with self._writer.connect() as connection:
                    await connection.exec_driver_sql("SELECT 1")
                return
            except (OSError, DBAPIError) as exc:
                # The driver's message names the failure, never the URL's password.
                reason = str(getattr(exc, "orig", exc)).splitlines()[0][:200]
                left = deadline - asyncio.get_running_loop().time()
                if left <= 0:
                    raise SwitchboardError(
                        f"the database is not reachable ({reason}); waited {limit:g} s "
                        "(server.database_wait); check server.database_url"
                    ) from exc
                logger.warning("the database is not reachable yet (%s); trying again", reason)
                await asyncio.sleep(min(pause, left))  # a retry pause, bounded by ``limit``
                pause = min(pause * 2, 2.0)

    async def _checkpoint_loop(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.checkpoint()
            except Exception:
                logger.exception("WAL checkpoint failed; trying again in %s s", interval)

    async def checkpoint(self) -> None:
        """Copy committed WAL frames into the database file without blocking writers (PASSIVE)."""
        async with self._reader.connect() as connection:
            await connection.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A transaction that may write; committed on success, rolled back on error."""
        async with self._writer.begin() as connection:
            yield connection

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A read-only transaction."""
        async with self._reader.connect() as connection:
            yield connection

    async def dispose(self) -> None:
        if self._maintenance is not None:
            self._maintenance.cancel()
            await asyncio.gather(self._maintenance, return_exceptions=True)
            self._maintenance = None
        if self._reader is not self._writer:
            # Readers first: a TRUNCATE checkpoint waits (busy timeout, 30 s) for every open
            # read snapshot to end, and the readers' pool holds connections open.
            await self._reader.dispose()
        if self.is_sqlite:
            with contextlib.suppress(Exception):
                async with self._writer.connect() as connection:
                    # Tidy, not needed: the WAL is replayed on the next open anyway. So it may
                    # not hold up a shutdown behind a reader still busy elsewhere.
                    await connection.exec_driver_sql("PRAGMA busy_timeout=1000")
                    await connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        await self._writer.dispose()


async def insert_unless_present(
    conn: AsyncConnection, table: Table, values: dict[str, Any], *, unique: list[str]
) -> bool:
    """Insert one row unless a row with the same ``unique`` columns exists; ``True`` if inserted."""
    dialect = sqlite if conn.dialect.name == "sqlite" else postgresql
    statement = dialect.insert(table).values(**values).on_conflict_do_nothing(index_elements=unique)
    result = await conn.execute(statement)
    return bool(result.rowcount)
