"""core.db on SQLite: what a cancelled task can leave on a connection never wedges the writer."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from core.db import Database


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[Database]:
    """A SQLite database with one table ``t (x)``."""
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
    try:
        async with database.write() as connection:
            await connection.exec_driver_sql("CREATE TABLE t (x INTEGER)")
        yield database
    finally:
        await database.dispose()


async def values_of(database: Database) -> list[int]:
    async with database.read() as connection:
        rows = (await connection.exec_driver_sql("SELECT x FROM t ORDER BY x")).all()
    return [row[0] for row in rows]


async def test_a_transaction_left_open_on_the_writer_is_rolled_back_by_the_next_write(
    database: Database,
) -> None:
    # What a task cancelled mid-COMMIT can leave: the driver inside a transaction that
    # SQLAlchemy no longer knows about, handed back to the pool (which does not reset it).
    async with database.engine.connect() as connection:
        driver = (await connection.get_raw_connection()).driver_connection
        assert driver is not None
        await driver.execute("BEGIN IMMEDIATE")
        await driver.execute("INSERT INTO t VALUES (1)")

    async with database.write() as connection:
        await connection.exec_driver_sql("INSERT INTO t VALUES (2)")

    assert await values_of(database) == [2]


async def test_a_connection_closed_mid_statement_does_not_keep_the_write_lock(
    database: Database,
) -> None:
    async with database.write() as connection:
        await connection.exec_driver_sql("INSERT INTO t VALUES (1), (2), (3)")
    # What a task cancelled between an UPDATE … RETURNING and its fetch leaves: an unfinished
    # statement inside a write transaction, and SQLAlchemy closing the connection it
    # invalidated. On Python 3.11 the close alone keeps the lock (a zombie connection).
    connection = await database.engine.connect()
    driver = (await connection.get_raw_connection()).driver_connection
    assert driver is not None
    await driver.execute("BEGIN IMMEDIATE")
    pending = await driver.execute("UPDATE t SET x = x + 1 RETURNING x")
    await connection.invalidate()
    await connection.close()

    async with asyncio.timeout(10):  # busy_timeout is 30 s: a kept lock fails this
        async with database.write() as writer:
            await writer.exec_driver_sql("INSERT INTO t VALUES (4)")

    assert await values_of(database) == [1, 2, 3, 4]
    del pending


async def test_a_write_cancelled_while_it_begins_leaves_no_transaction_holding_the_lock(
    database: Database, tmp_path: Path
) -> None:
    # Another process holds the write lock: the writer's BEGIN IMMEDIATE waits on the driver's
    # thread, and its task is cancelled meanwhile (a shutdown, a timeout).
    with contextlib.closing(
        sqlite3.connect(tmp_path / "db.sqlite", isolation_level=None, timeout=0)
    ) as other:
        drivers: list[Any] = []
        connected = asyncio.Event()

        def on_connect(connection: Any) -> None:
            drivers.append(connection.connection.driver_connection)
            connected.set()

        # Fires as the write takes its connection; the write's task next yields to the loop
        # when core.db's begin hook awaits the driver's BEGIN IMMEDIATE.
        event.listen(database.engine.sync_engine, "engine_connect", on_connect)

        async def write() -> None:
            async with database.write() as connection:
                await connection.exec_driver_sql("INSERT INTO t VALUES (1)")

        try:
            other.execute("BEGIN IMMEDIATE")
            task = asyncio.create_task(write())
            await connected.wait()
            task.cancel()
            other.execute("COMMIT")  # the other process is done: the driver's BEGIN gets it
            with pytest.raises(asyncio.CancelledError):
                await task
        finally:
            event.remove(database.engine.sync_engine, "engine_connect", on_connect)
        # Whatever the driver's thread still had queued behind that BEGIN has run (or the
        # connection was rightly discarded, and is closed).
        with contextlib.suppress(ValueError):
            await drivers[0].execute("SELECT 1")

        other.execute("BEGIN IMMEDIATE")  # timeout 0: fails at once if the writer kept the lock
        other.execute("COMMIT")
        await write()
        assert await values_of(database) == [1]
