"""A node started while its PostgreSQL is down waits for it (``server.database_wait``).

Found by the fault proof (issue 15): a node restarted during a PostgreSQL restart exited at
once, so its supervisor had to start it again. A PostgreSQL of the test's own is crashed here,
so the suite's shared server is not touched.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.conftest import ServiceFactory
from tests.e2e.harness import wait_until
from tests.pgserver import ThrowawayPostgres

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]


@pytest.fixture
def down_postgres() -> Iterator[tuple[ThrowawayPostgres, str]]:
    """A PostgreSQL with an empty database ``sb``, stopped (``start_again`` revives it)."""
    with ThrowawayPostgres() as server:
        server.create_database("sb")
        url = server.url("sb")
        server.crash()
        yield server, url


async def test_serve_waits_for_a_database_that_comes_up_after_it(
    make_service: ServiceFactory, down_postgres: tuple[ThrowawayPostgres, str]
) -> None:
    postgres, url = down_postgres
    service = make_service({"SWITCHBOARD_SERVER__DATABASE_URL": url})
    server = service.start()
    await wait_until(
        lambda: "the database is not reachable yet" in server.stderr,
        60,
        "the server to say it waits for the database",
    )
    assert server.popen.poll() is None, server.tails()
    assert url not in server.stderr
    postgres.start_again()
    await server.wait_ready()
    listed = await service.cli("keys", "list")
    assert "admin" in listed.stdout, listed.describe()


async def test_serve_gives_up_after_database_wait(
    make_service: ServiceFactory, down_postgres: tuple[ThrowawayPostgres, str]
) -> None:
    _, url = down_postgres
    service = make_service(
        {"SWITCHBOARD_SERVER__DATABASE_URL": url, "SWITCHBOARD_SERVER__DATABASE_WAIT": "1"}
    )
    server = service.start()
    exited = await wait_until(lambda: server.popen.poll() is not None, 60, "the server to exit")
    assert exited and server.popen.returncode != 0, server.tails()
    assert "the database is not reachable yet" in server.stderr, server.tails()
    assert "waited 1 s (server.database_wait)" in server.stderr, server.tails()
    assert "Traceback" not in server.stderr, server.tails()
