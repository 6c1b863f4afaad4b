"""core.db on SQLite: a transaction abandoned on the writer connection does not wedge the writer."""

from __future__ import annotations

import asyncio
from pathlib import Path

from core.db import Database


async def test_a_transaction_left_open_on_the_writer_is_rolled_back_by_the_next_write(
    tmp_path: Path,
) -> None:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
    try:
        async with database.write() as connection:
            await connection.exec_driver_sql("CREATE TABLE t (x INTEGER)")
        # What a task cancelled mid-COMMIT can leave: the driver inside a transaction that
        # SQLAlchemy no longer knows about, handed back to the pool (which does not reset it).
        async with database.engine.connect() as connection:
            driver = (await connection.get_raw_connection()).driver_connection
            assert driver is not None
            await driver.execute("BEGIN IMMEDIATE")
            await driver.execute("INSERT INTO t VALUES (1)")

        async with database.write() as connection:
            await connection.exec_driver_sql("INSERT INTO t VALUES (2)")
        async with database.read() as connection:
            rows = (await connection.exec_driver_sql("SELECT x FROM t")).all()
    finally:
        await database.dispose()

    assert [row[0] for row in rows] == [2]


async def test_a_connection_closed_mid_statement_does_not_keep_the_write_lock(
    tmp_path: Path,
) -> None:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
    try:
        async with database.write() as connection:
            await connection.exec_driver_sql("CREATE TABLE t (x INTEGER)")
            await connection.exec_driver_sql("INSERT INTO t VALUES (1), (2), (3)")
        # What a task cancelled between an UPDATE … RETURNING and its fetch leaves: an
        # unfinished statement inside a write transaction, and SQLAlchemy closing the
        # connection it invalidated. On Python 3.11 the close alone keeps the lock (zombie).
        connection = await database.engine.connect()
        driver = (await connection.get_raw_connection()).driver_connection
        assert driver is not None
        await driver.execute("BEGIN IMMEDIATE")
        pending = await driver.execute("UPDATE t SET x = x + 1 RETURNING x")
        await connection.invalidate()
        await connection.close()

        async with asyncio.timeout(10):  # busy_timeout is 30 s: a kept lock fails this
            async with database.write() as connection:
                await connection.exec_driver_sql("INSERT INTO t VALUES (4)")
        async with database.read() as connection:
            rows = (await connection.exec_driver_sql("SELECT x FROM t ORDER BY x")).all()
        del pending
    finally:
        await database.dispose()

    assert [row[0] for row in rows] == [1, 2, 3, 4]
