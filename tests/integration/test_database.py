"""core.db on SQLite: a transaction abandoned on the writer connection does not wedge the writer."""

from __future__ import annotations

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
