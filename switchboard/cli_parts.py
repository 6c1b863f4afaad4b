"""What a ``switchboard`` command other than ``serve`` and ``db upgrade`` works with.

The stores on the settings' database, which must already be at the latest schema: a command
never migrates (a server on an older release may still use that database) and starts no
listener, worker or scheduler.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from core.db import Database
from core.errors import SwitchboardError
from switchboard.datadir import prepare_data_dir
from switchboard.migrate import schema_revisions
from switchboard.services import Services, open_services
from switchboard.settings import Settings


class SchemaBehind(SwitchboardError):
    """The database is not at the latest schema: run `switchboard db upgrade`."""

    def __init__(self, current: frozenset[str], heads: frozenset[str]) -> None:
        at = ", ".join(sorted(current)) or "no revision (never migrated)"
        latest = ", ".join(sorted(heads))
        super().__init__(
            f"the database is at revision {at}, the latest is {latest}: "
            "run `switchboard db upgrade` (with the same settings) first"
        )


async def require_latest_schema(settings: Settings) -> None:
    """Raises :class:`SchemaBehind` unless the database is at our migrations' head."""
    url = settings.server.resolved_database_url()
    prepare_data_dir(settings.server.data_dir, url)
    database = Database(url, sqlite_synchronous=settings.server.sqlite_synchronous)
    try:
        current, heads = await schema_revisions(database)
    finally:
        await database.dispose()
    if current != heads:
        raise SchemaBehind(current, heads)


@contextlib.asynccontextmanager
async def open_cli_parts(settings: Settings) -> AsyncIterator[Services]:
    """The stores of ``settings``' database, checked to be at the latest schema, never migrated."""
    await require_latest_schema(settings)
    async with open_services(settings, migrate=False) as services:
        yield services
