"""Run Alembic migrations programmatically on a :class:`core.db.Database`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

import migrations
from core.db import Database


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(Path(migrations.__file__).parent))
    return config


async def upgrade(database: Database, revision: str = "head") -> None:
    """Bring the schema to ``revision`` (``head`` by default). Safe to call on every start."""
    await _run_alembic(database, command.upgrade, revision)


async def schema_revisions(database: Database) -> tuple[frozenset[str], frozenset[str]]:
    """(the revisions the database is at, the heads of our migrations): equal when it is at the
    latest schema; the first is empty for a database never migrated."""
    heads = frozenset(ScriptDirectory.from_config(alembic_config()).get_heads())

    def _current(connection: Connection) -> frozenset[str]:
        return frozenset(MigrationContext.configure(connection).get_current_heads())

    async with database.engine.connect() as connection:
        return await connection.run_sync(_current), heads


async def downgrade(database: Database, revision: str) -> None:
    await _run_alembic(database, command.downgrade, revision)


async def _run_alembic(
    database: Database, step: Callable[[Config, str], None], revision: str
) -> None:
    config = alembic_config()

    def _run(connection: Connection) -> None:
        config.attributes["connection"] = connection
        step(config, revision)

    async with database.engine.connect() as connection:
        await connection.run_sync(_run)
        await connection.commit()
