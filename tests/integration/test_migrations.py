"""Migrations are code: one head, and the migrated schema equals the tables the code queries.

These start from an empty database (``empty_database_url``), as an upgrade does in production;
every other test gets a clone of one migrated per session, checked here to be at head.
"""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import event, inspect
from sqlalchemy.engine import Connection

from core.db import Database
from switchboard.migrate import alembic_config, downgrade, upgrade
from switchboard.schema import metadata


def test_single_head() -> None:
    assert len(ScriptDirectory.from_config(alembic_config()).get_heads()) == 1


def diff(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, metadata))


def current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


async def test_migrated_schema_matches_the_tables(empty_database_url: str) -> None:
    database = Database(empty_database_url)
    await upgrade(database)
    async with database.engine.connect() as connection:
        differences = await connection.run_sync(diff)
    await database.dispose()
    assert differences == []


async def test_every_migration_downgrades_to_empty_and_upgrades_again(
    empty_database_url: str,
) -> None:
    database = Database(empty_database_url)
    await upgrade(database)
    await downgrade(database, "base")
    async with database.engine.connect() as connection:
        left = await connection.run_sync(lambda sync: set(inspect(sync).get_table_names()))
    await upgrade(database)
    async with database.engine.connect() as connection:
        differences = await connection.run_sync(diff)
    await database.dispose()
    assert left == {"alembic_version"}
    assert differences == []


async def test_a_cloned_database_is_at_head_and_the_start_up_migration_only_reads(
    database_url: str,
) -> None:
    database = Database(database_url)
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    event.listen(database.engine.sync_engine, "before_cursor_execute", record)
    await upgrade(database)  # what open_services does on every start
    async with database.engine.connect() as connection:
        revision = await connection.run_sync(current_revision)
    await database.dispose()
    assert revision == ScriptDirectory.from_config(alembic_config()).get_current_head()
    writes = ("CREATE", "ALTER", "DROP", "INSERT", "UPDATE", "DELETE")
    assert [s for s in statements if s.lstrip().upper().startswith(writes)] == []
