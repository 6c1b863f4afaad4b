"""The processes a benchmark measures, and the stores it counts afterwards.

The ``switchboard serve`` process is tests/e2e's :class:`~tests.e2e.harness.ServerProcess` (the same
thing: a child process on a loopback port, output in files, SIGTERM then SIGKILL). What is bench's
own: the reference server's process, counting what a store holds from outside the server, and the
throwaway PostgreSQL (tests/pgserver.py) a backend may need.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import httpx

from tests.conftest import ROOT, free_port
from tests.e2e.harness import ServerProcess, switchboard_command, tail, wait_until
from tests.pgserver import ThrowawayPostgres

HOST = "127.0.0.1"
Backend = Literal["sqlite", "postgres"]


class BenchError(RuntimeError):
    """The benchmark could not be set up or run."""


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def clean_environ() -> dict[str, str]:
    """This process's environment without inherited Switchboard settings."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("SWITCHBOARD_", "BENCH_"))}


@dataclass(frozen=True)
class Store:
    """A server's database, read from outside the server (sqlite3 read-only, or asyncpg)."""

    backend: Backend
    data_dir: Path
    url: str | None = None  # SQLAlchemy URL (None: SQLite file in data_dir)
    dsn: str | None = None  # asyncpg DSN (postgres)
    sqlite_file: str = "switchboard.db"

    def settings_env(self) -> dict[str, str]:
        env = {"SWITCHBOARD_SERVER__DATA_DIR": str(self.data_dir)}
        if self.url is not None:
            env["SWITCHBOARD_SERVER__DATABASE_URL"] = self.url
        return env

    async def rows(self, sql: str) -> list[tuple[object, ...]]:
        """Run one read-only query; WAL readers do not block the server's writer."""
        if self.backend == "sqlite":
            return await asyncio.to_thread(self._sqlite_rows, sql)
        import asyncpg

        connection = await asyncpg.connect(self.dsn, timeout=10)
        try:
            return [tuple(record) for record in await connection.fetch(sql)]
        finally:
            await connection.close()

    def _sqlite_rows(self, sql: str) -> list[tuple[object, ...]]:
        path = self.data_dir / self.sqlite_file
        with contextlib.closing(
            sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        ) as db:
            return [tuple(row) for row in db.execute(sql).fetchall()]

    async def count(self, sql: str) -> int:
        return int(str((await self.rows(sql))[0][0]))

    async def has_table(self, name: str) -> bool:
        sql = (
            f"select count(*) from sqlite_master where type = 'table' and name = '{name}'"
            if self.backend == "sqlite"
            else f"select count(*) from information_schema.tables where table_name = '{name}'"
        )
        return await self.count(sql) > 0

    async def settled(self, sql: str, timeout: float = 30.0, quiet: float = 1.0) -> int:
        """``count(sql)`` once it stopped changing for ``quiet`` s (bounded by ``timeout``)."""
        deadline = time.monotonic() + timeout
        last, since = await self.count(sql), time.monotonic()
        while time.monotonic() < deadline:
            await asyncio.sleep(0.1)  # a poll interval
            now = await self.count(sql)
            if now != last:
                last, since = now, time.monotonic()
            elif time.monotonic() - since >= quiet:
                break
        return last


def sqlite_store(work: Path, name: str) -> Store:
    (work / name).mkdir(parents=True, exist_ok=True)
    return Store("sqlite", work / name)


def postgres_store(pg: ThrowawayPostgres, work: Path, name: str) -> Store:
    (work / name).mkdir(parents=True, exist_ok=True)
    pg.create_database(name)
    return Store("postgres", work / name, pg.url(name), pg.dsn(name))


async def cli(store: Store, env: Mapping[str, str], *args: str, timeout: float = 120) -> str:
    """``switchboard <args>`` against ``store``; its stdout (never echoed: it may hold a key)."""
    process = await asyncio.create_subprocess_exec(
        *switchboard_command(),
        *args,
        env={**env, **store.settings_env()},
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    async with asyncio.timeout(timeout):
        out, err = await process.communicate()
    if process.returncode != 0:
        raise BenchError(f"switchboard {' '.join(args[:2])} failed: {err.decode()[-2000:]}")
    return out.decode()


async def create_key(store: Store, env: Mapping[str, str]) -> str:
    stdout = await cli(store, env, "keys", "create", "--name", "bench")
    lines = [line.strip() for line in stdout.splitlines() if line.strip()]
    if not lines:
        raise BenchError("switchboard keys create printed nothing")
    return lines[-1]


async def start_switchboard(
    store: Store, env: Mapping[str, str], roles: str, log_dir: Path, name: str
) -> ServerProcess:
    """``switchboard serve --role <roles>`` on a free port, once /healthz answers 200."""
    port = free_port()
    full_env = {**env, **store.settings_env(), "SWITCHBOARD_SERVER__PORT": str(port)}
    server = ServerProcess(name, full_env, port, log_dir, args=("--role", roles, "--host", HOST))
    try:
        await server.wait_ready()
    except AssertionError as exc:
        server.stop()
        raise BenchError(f"{name} did not start: {exc}") from None
    log(f"{name}: switchboard serve --role {roles} on {server.url} (pid {server.pid})")
    return server


class ReferenceProcess:
    """bench/reference.py in a child process: the ceiling every intake row is compared with."""

    def __init__(self, database: Path, secrets: Mapping[str, str], log_dir: Path) -> None:
        self.database = database
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.log_path = log_dir / "reference.log"
        command: Sequence[str] = (
            *(sys.executable, "-m", "bench.reference"),
            *("--port", str(self.port), "--database", str(database)),
        )
        with self.log_path.open("wb") as out:
            self.popen = subprocess.Popen(
                command,
                cwd=ROOT,
                env={**clean_environ(), **secrets},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    async def wait_ready(self, timeout: float = 30) -> None:
        async def ready() -> bool:
            if self.popen.poll() is not None:
                raise BenchError(f"the reference server exited:\n{tail(self.log_path)}")
            with contextlib.suppress(httpx.TransportError):
                async with httpx.AsyncClient(timeout=2) as http:
                    return (await http.get(f"{self.url}/healthz")).status_code == 200
            return False

        await wait_until(ready, timeout, "the reference server to answer /healthz")
        log(f"reference server on {self.url} (pid {self.pid})")

    def store(self) -> Store:
        return Store("sqlite", self.database.parent, sqlite_file=self.database.name)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(20)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(20)
