"""The throwaway PostgreSQL server that the PostgreSQL-backed tests stand on."""

from __future__ import annotations

from collections.abc import Iterator

import asyncpg
import pytest

from tests.pgserver import ThrowawayPostgres

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def postgres() -> Iterator[ThrowawayPostgres]:
    # A sync fixture: initdb and the readiness poll block, which must not happen on the loop.
    with ThrowawayPostgres() as server:
        yield server


@pytest.fixture
def smoke_database(postgres: ThrowawayPostgres) -> str:
    postgres.create_database("pgserver_smoke")
    return "pgserver_smoke"


async def test_created_database_accepts_asyncpg_connections(
    postgres: ThrowawayPostgres, smoke_database: str
) -> None:
    assert postgres.url(smoke_database) == (
        f"postgresql+asyncpg://postgres@127.0.0.1:{postgres.port}/{smoke_database}"
    )

    connection = await asyncpg.connect(postgres.dsn(smoke_database))
    try:
        assert await connection.fetchval("select 1") == 1
        assert await connection.fetchval("select current_database()") == smoke_database
    finally:
        await connection.close()
