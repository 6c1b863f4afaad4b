"""Migrations are code: one head, and the migrated schema equals the tables the code queries."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

from core.db import Database
from switchboard.migrate import alembic_config, upgrade
from switchboard.schema import metadata


def test_single_head() -> None:
    assert len(ScriptDirectory.from_config(alembic_config()).get_heads()) == 1


async def test_migrated_schema_matches_the_tables(database_url: str) -> None:
    database = Database(database_url)
    await upgrade(database)

    def diff(connection: Connection) -> list[Any]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, metadata))

    async with database.engine.connect() as connection:
        differences = await connection.run_sync(diff)
    await database.dispose()
    assert differences == []
