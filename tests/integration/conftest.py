"""Fixtures shared by the integration tests (the top-level conftest has the live server)."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiohttp import web

from core.clock import SystemClock
from core.db import Database
from dispatch.environments import EnvironmentBuilder
from dispatch.pep723 import read_script_metadata
from dispatch.sandbox.cgroups import CgroupLayout
from dispatch.sandbox.sandbox_runner import SandboxRunner
from dispatch.sandbox.zygote_pool import ZygotePool
from switchboard.migrate import upgrade
from tests.conftest import free_port
from tests.fakes.slack_api import SlackApi
from tests.fakes.smtp_sink import SmtpSink
from tests.fakes.twilio_api import FakeTwilioApi, running_twilio_api
from tests.integration.deliveries import Receiver
from tests.integration.sandbox_helpers import host_sandbox_or_problem, sandbox_settings_for
from tests.runs import HELLO, PASSED_ENV, BuiltEnvironment
from triggers.auth import KeyStore


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    """A database of the test's own, migrated; disposed after it."""
    db = Database(database_url)
    await upgrade(db)
    yield db
    await db.dispose()


@pytest.fixture
async def default_owner(database: Database) -> None:
    """The owner ``default`` exists (runs and inbox events name their owner)."""
    await KeyStore(database, SystemClock()).ensure_owner("default")


@pytest.fixture
async def sink() -> AsyncIterator[SmtpSink]:
    """The mail relay the server sends through: records every message it accepts."""
    relay = SmtpSink()
    await relay.start()
    yield relay
    await relay.stop()


@pytest.fixture
async def slack() -> AsyncIterator[SlackApi]:
    """A fake Slack Web API on loopback that knows one user, U42 (Alice)."""
    async with SlackApi.running() as fake:
        fake.users["U42"] = "Alice"
        yield fake


@pytest.fixture
async def twilio() -> AsyncIterator[FakeTwilioApi]:
    """A fake Twilio REST API on a free loopback port."""
    async with running_twilio_api(free_port()) as fake:
        yield fake


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """A webhook endpoint on loopback (``receiver.url``) recording every delivery."""
    target = Receiver()
    app = web.Application()
    app.router.add_post("/hook", target.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    target.url = f"http://127.0.0.1:{port}/hook"
    yield target
    await runner.cleanup()


@pytest.fixture(scope="session")
def base_env() -> dict[str, str]:
    return {name: os.environ[name] for name in PASSED_ENV if name in os.environ}


@pytest.fixture(scope="session")
def built_environment(workflow_cache: Path, base_env: dict[str, str]) -> BuiltEnvironment:
    """The environment of the shared test-workflow header, built once per session (or cache)."""
    builder = EnvironmentBuilder(
        env_dir=workflow_cache / "envs",
        uv_cache_dir=workflow_cache / "uv",
        python=Path(sys.executable),
        base_env=base_env,
    )

    async def build() -> tuple[str, Path]:
        lock = await builder.lock(read_script_metadata(HELLO))
        return lock, await builder.ensure(lock)

    lock, env = asyncio.run(build())
    return BuiltEnvironment(builder, lock, env)


@pytest.fixture(scope="module")
def host_sandbox() -> Iterator[tuple[Path, CgroupLayout]]:
    """A runs directory and cgroups for sandboxes; skips the module where the host has none."""
    found = host_sandbox_or_problem()
    if isinstance(found, str):
        pytest.skip(f"no sandbox on this host: {found}")
    yield found
    runs_dir, cgroups = found
    cgroups.release()
    runs_dir.rmdir()


@pytest.fixture(params=[False, True], ids=["fresh", "zygote"])
async def sandbox_runner(
    request: pytest.FixtureRequest,
    host_sandbox: tuple[Path, CgroupLayout],
    base_env: dict[str, str],
) -> AsyncIterator[SandboxRunner]:
    """A sandbox runner whose runs are each a fresh sandbox or a zygote's child (same assertions);
    a test that wants one mode parametrises this fixture indirectly."""
    runs_dir, cgroups = host_sandbox
    settings = sandbox_settings_for(runs_dir, cgroups)
    zygotes = ZygotePool(settings, Path(f"{runs_dir}-z")) if request.param else None
    runner = SandboxRunner(settings, base_env=base_env, zygotes=zygotes)
    yield runner
    await runner.close()
    if zygotes is not None:
        assert len(zygotes) == 1, "the runs fell back to fresh sandboxes"
        await zygotes.close()
