"""Shared fixtures: both databases, a live server on a loopback port, registered workflows.

Every test that takes ``live`` runs twice: on SQLite and on a throwaway PostgreSQL 15 server
(tests/pgserver.py). The schema is migrated once per session into a template that each test's
database is cloned from, so the server's start-up migration finds it at head; only the tests of
the migrations themselves start from ``empty_database_url``. Workflow environments are built once
per session (or once per machine when ``SWITCHBOARD_TEST_CACHE`` names a directory).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import sqlite3
import uuid
from collections.abc import AsyncIterator, Collection, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp import web

from core.db import Database
from switchboard.app import READY, ROLES, SERVICES, create_app
from switchboard.config import load_settings
from switchboard.migrate import upgrade
from switchboard.server import start_site
from switchboard.services import Services
from switchboard.settings import Settings
from tests.dovecot import Dovecot, DovecotUnavailableError
from tests.pgserver import ThrowawayPostgres

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / "tests" / "workflows"
EXAMPLES = ROOT / "examples"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def postgres() -> Iterator[ThrowawayPostgres]:
    with ThrowawayPostgres() as server:
        yield server


@pytest.fixture(scope="session")
def dovecot() -> Iterator[Dovecot]:
    """One Dovecot IMAP server per session (tests/dovecot.py); each test adds its own user."""
    try:
        server = Dovecot()
        server.start()
    except DovecotUnavailableError as exc:
        pytest.skip(str(exc))
    yield server
    server.close()


@pytest.fixture(scope="session")
def workflow_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    configured = os.environ.get("SWITCHBOARD_TEST_CACHE")
    if configured:
        path = Path(configured)
        path.mkdir(parents=True, exist_ok=True)
        return path
    if os.environ.get("PYTEST_XDIST_WORKER"):
        # One cache for every worker of the run (their temp dirs share a parent): each
        # environment is built once, under the builder's flock, not once per worker.
        path = tmp_path_factory.getbasetemp().parent / "workflow-cache"
        path.mkdir(exist_ok=True)
        return path
    return tmp_path_factory.mktemp("workflow-cache")


BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


async def migrate_to_head(url: str) -> None:
    database = Database(url)
    try:
        await upgrade(database)
    finally:
        await database.dispose()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One SQLite file migrated to whatever head the code has; tests get copies of it."""
    path = tmp_path_factory.mktemp("template") / "switchboard.db"
    asyncio.run(migrate_to_head(f"sqlite+aiosqlite:///{path}"))
    with closing(sqlite3.connect(path)) as connection:
        # Out of WAL mode, the whole database is the one file (the server turns WAL back on).
        connection.execute("PRAGMA journal_mode=DELETE")
    return path


@pytest.fixture(scope="session")
def postgres_template(postgres: ThrowawayPostgres) -> str:
    """A PostgreSQL database migrated to head, the template of every test's database."""
    name = "switchboard_head"
    postgres.create_database(name)

    async def build() -> None:
        await migrate_to_head(postgres.url(name))
        # CREATE DATABASE … TEMPLATE needs the template idle: refuse connections to it.
        connection = await asyncpg.connect(postgres.dsn("postgres"))
        try:
            await connection.execute(f"ALTER DATABASE {name} WITH ALLOW_CONNECTIONS false")
        finally:
            await connection.close()

    asyncio.run(build())
    return name


class PostgresClones:
    """Clones of the template, made one test ahead: CREATE DATABASE copies ~8 MB of catalogs
    (0.1-0.5 s), which a thread waits for while the test before runs."""

    def __init__(self, server: ThrowawayPostgres, template: str) -> None:
        self._server = server
        self._template = template
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pg-clones")
        self._next = self._thread.submit(self._clone)

    def _clone(self) -> str:
        # Over the Unix socket and without a subprocess: a fork here, while the test's thread
        # probes a free port, would hold the probe socket until exec and fail the test's bind.
        name = "t_" + uuid.uuid4().hex[:12]

        async def create() -> None:
            connection = await asyncpg.connect(
                host=str(self._server.socket_dir),
                port=self._server.port,
                user="postgres",
                database="postgres",
            )
            try:
                await connection.execute(f"CREATE DATABASE {name} TEMPLATE {self._template}")
            finally:
                await connection.close()

        asyncio.run(create())
        return name

    def take(self) -> str:
        """A database no other test has had; the next one is started at once."""
        name = self._next.result()
        self._next = self._thread.submit(self._clone)
        return name

    def close(self) -> None:
        self._thread.shutdown(wait=True, cancel_futures=True)


@pytest.fixture(scope="session")
def postgres_clones(
    postgres: ThrowawayPostgres, postgres_template: str
) -> Iterator[PostgresClones]:
    clones = PostgresClones(postgres, postgres_template)
    yield clones
    clones.close()


def new_database(request: pytest.FixtureRequest, tmp_path: Path, *, at_head: bool) -> str:
    """A database of its own for one test: a clone of the template, or empty."""
    if request.param == "sqlite":
        path = tmp_path / "switchboard.db"
        if at_head:
            shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
            path.chmod(0o600)  # as the server creates it
        return f"sqlite+aiosqlite:///{path}"
    server: ThrowawayPostgres = request.getfixturevalue("postgres")
    if at_head:
        clones: PostgresClones = request.getfixturevalue("postgres_clones")
        return server.url(clones.take())
    name = "t_" + uuid.uuid4().hex[:12]
    server.create_database(name)
    return server.url(name)


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database whose schema is at head already (the server's migration on start is a no-op)."""
    return new_database(request, tmp_path, at_head=True)


@pytest.fixture(params=BACKENDS)
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database with no schema at all, for tests of the migrations themselves."""
    return new_database(request, tmp_path, at_head=False)


def make_settings(
    data_dir: Path, database_url: str, cache: Path, port: int, **sections: dict[str, Any]
) -> Settings:
    server = {
        "data_dir": str(data_dir),
        "database_url": database_url,
        "port": port,
        "auth_cache_seconds": 0,
    }
    runtime = {
        "env_dir": str(cache / "envs"),
        "uv_cache_dir": str(cache / "uv"),
        "register_examples": False,
        "poll_interval": 0.2,
        "workers": 4,
    }
    # The tests' webhook receivers listen on loopback, which only an allow-list lets us reach.
    delivery: dict[str, Any] = {"allow_hosts": ["127.0.0.1"]}
    server.update(sections.pop("server", {}))
    runtime.update(sections.pop("runtime", {}))
    delivery.update(sections.pop("delivery", {}))
    return load_settings(None, server=server, runtime=runtime, delivery=delivery, **sections)


@dataclass
class Live:
    """A running server on 127.0.0.1 and what a test needs to talk to it."""

    url: str
    settings: Settings
    services: Services
    key: str
    app: web.Application | None = None

    async def key_for(self, owner: str = "default", *, one_time: bool = False) -> str:
        key, _ = await self.services.keys.create(owner_id=owner, one_time=one_time)
        return key

    async def register(self, name: str) -> None:
        path = WORKFLOWS / f"{name}.py"
        if not path.exists():
            path = EXAMPLES / f"{name}.py"
        await self.services.registry.add(path, name.replace("_", "-"))


class LiveFactory:
    def __init__(self, tmp_path: Path, database_url: str, cache: Path) -> None:
        self._tmp = tmp_path
        self._database_url = database_url
        self._cache = cache
        self._runners: list[web.AppRunner] = []

    async def start(self, *, roles: Collection[str] = ROLES, **sections: dict[str, Any]) -> Live:
        # Bound here and kept: a port probed free and closed can be taken (by another worker's
        # server, or as the local port of any outgoing connection) before the site binds it.
        # No SO_REUSEADDR: with it, Linux may hand bind(port 0) a port another such socket holds
        # bound but not yet listening, and one of the two listens fails "address in use". And
        # listening at once: the site starts only after the services have (seconds later).
        listening = socket.socket()
        listening.bind(("127.0.0.1", 0))
        listening.listen(128)
        port = listening.getsockname()[1]
        settings = make_settings(
            self._tmp / "data", self._database_url, self._cache, port, **sections
        )
        app = create_app(settings, roles=roles)
        runner = web.AppRunner(app, handle_signals=False)
        await runner.setup()
        self._runners.append(runner)
        await start_site(runner, settings.server, host="127.0.0.1", port=port, sock=listening)
        async with asyncio.timeout(30):
            await app[READY].wait()
        services = app[SERVICES]
        key, _ = await services.keys.create(name="test")
        return Live(
            url=f"http://127.0.0.1:{port}", settings=settings, services=services, key=key, app=app
        )

    async def stop(self, live: Live) -> None:
        """Shut one node down (its cleanup contexts run, as on SIGTERM)."""
        for runner in self._runners:
            if runner.app is live.app:
                self._runners.remove(runner)
                await runner.cleanup()
                return
        raise ValueError("that node is not running")

    async def close(self) -> None:
        """Stop every server started so far (a test may stop them and start again)."""
        while self._runners:
            await self._runners.pop().cleanup()


@pytest.fixture
async def live_factory(
    tmp_path: Path, database_url: str, workflow_cache: Path
) -> AsyncIterator[LiveFactory]:
    factory = LiveFactory(tmp_path, database_url, workflow_cache)
    yield factory
    await factory.close()


@pytest.fixture
async def live(live_factory: LiveFactory) -> Live:
    return await live_factory.start()
