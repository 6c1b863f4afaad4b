"""Fixtures for the end-to-end tests: a :class:`~tests.e2e.harness.Service` per test.

``service`` runs on both databases (the ``database_url`` parameter) with the workflow environments
of ``workflow_cache``. Every server process a test started is stopped at teardown (SIGTERM, then
SIGKILL), and the tails of their output are attached to the report of a failed test.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Generator, Iterator, Mapping
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.e2e.harness import ServerProcess, Service
from tests.fakes.slack_api import SlackApi
from tests.fakes.twilio_api import FakeTwilioApi, running_twilio_api

SERVERS_KEY = pytest.StashKey[list[ServerProcess]]()

ServiceFactory = Callable[[Mapping[str, str]], Service]


@pytest.fixture
def make_service(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ServiceFactory]:
    """Build :class:`Service` objects; every server any of them started is stopped at teardown."""
    servers: list[ServerProcess] = []
    request.node.stash[SERVERS_KEY] = servers
    made = 0

    def make(settings: Mapping[str, str]) -> Service:
        nonlocal made
        made += 1
        directory = tmp_path if made == 1 else tmp_path / f"service-{made}"
        directory.mkdir(exist_ok=True)
        return Service(directory, settings, servers)

    yield make
    for server in reversed(servers):
        server.stop()


@pytest.fixture
def service(make_service: ServiceFactory, database_url: str, workflow_cache: Path) -> Service:
    """The usual test service: the parametrised database, cached environments, fast polling."""
    return make_service(
        {
            "SWITCHBOARD_SERVER__DATABASE_URL": database_url,
            "SWITCHBOARD_RUNTIME__ENV_DIR": str(workflow_cache / "envs"),
            "SWITCHBOARD_RUNTIME__UV_CACHE_DIR": str(workflow_cache / "uv"),
            "SWITCHBOARD_RUNTIME__POLL_INTERVAL": "0.2",
            "SWITCHBOARD_RUNTIME__REGISTER_EXAMPLES": "false",
            # These tests count executions through a marker file on the host, which the sandbox
            # rightly hides from workflows; the sandbox has its own tests (test_sandbox.py).
            "SWITCHBOARD_RUNTIME__SANDBOX": "process",
        }
    )


@pytest.fixture
async def twilio() -> AsyncIterator[FakeTwilioApi]:
    """The fake Twilio API, in this test's event loop: the servers' WhatsApp replies go there."""
    async with running_twilio_api(free_port()) as fake:
        yield fake


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Attach the tails of every server's output to the report of a failed test."""
    report = yield
    servers = item.stash.get(SERVERS_KEY, [])
    if report.failed and servers:
        for server in servers:
            report.sections.append((f"switchboard {server.name} output", server.tails()))
    return report


@pytest.fixture
async def slack() -> AsyncIterator[SlackApi]:
    """The fake Slack Web API and Socket Mode end, in this test's event loop."""
    async with SlackApi.running() as fake:
        yield fake
