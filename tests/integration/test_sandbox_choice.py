"""Which runner the server chooses: runtime.sandbox = auto | bwrap | process.

``bwrap`` is a promise of isolation: a host that cannot keep it makes the server refuse to start
(never a silent downgrade). ``auto`` falls back to plain processes, loudly, and says so in
/healthz. Here the host "cannot" because bubblewrap is not on PATH.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import httpx
import pytest
from aiohttp import web

from switchboard.app import create_app
from switchboard.sandboxing import SandboxUnavailable
from tests.conftest import LiveFactory, free_port, make_settings

# Which runner starts does not depend on the database: one store is enough.
pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@pytest.fixture
def no_bubblewrap(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))


@pytest.mark.usefixtures("no_bubblewrap")
async def test_bwrap_on_a_host_without_it_refuses_to_start(
    tmp_path: Path, database_url: str, workflow_cache: Path
) -> None:
    settings = make_settings(
        tmp_path / "data",
        database_url,
        workflow_cache,
        free_port(),
        runtime={"sandbox": "bwrap", "register_examples": False},
    )
    runner = web.AppRunner(create_app(settings), handle_signals=False)

    with pytest.raises(SandboxUnavailable) as refused:
        await runner.setup()
    await runner.cleanup()

    assert "runtime.sandbox = 'bwrap'" in refused.value.detail
    assert "bwrap is not installed" in refused.value.detail


@pytest.mark.usefixtures("no_bubblewrap")
async def test_auto_on_a_host_without_it_runs_plain_processes_loudly(
    live_factory: LiveFactory, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="switchboard.sandboxing"):
        live = await live_factory.start(runtime={"sandbox": "auto"})
    async with httpx.AsyncClient(base_url=live.url) as http:
        health = (await http.get("/healthz")).json()

    assert health["sandbox"] == "process"
    assert any("SANDBOX UNAVAILABLE" in record.getMessage() for record in caplog.records)


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")
async def test_start_sweeps_what_a_crashed_server_of_the_same_data_dir_left(
    live_factory: LiveFactory,
) -> None:
    # Where a server of this data dir keeps run state (named after the data dir's hash).
    first = await live_factory.start(runtime={"sandbox": "bwrap"})
    runs_dir, socket_dir = first.services.runs_dir, first.services.socket_dir
    await live_factory.close()
    zygotes_dir = runs_dir.with_name(runs_dir.name + "-z")
    stale_run = runs_dir / "req_crashed"
    stale_zygote = zygotes_dir / "zygote-crashed"
    stale_socket = socket_dir / "req_crashed.sock"
    for directory in (stale_run / "work", stale_zygote / "env", socket_dir):
        directory.mkdir(parents=True, exist_ok=True)
    stale_socket.write_bytes(b"")

    live = await live_factory.start(runtime={"sandbox": "bwrap"})
    async with httpx.AsyncClient(base_url=live.url) as http:
        health = (await http.get("/healthz")).json()

    assert health["sandbox"] == "bwrap"
    assert live.services.runs_dir == runs_dir
    assert not stale_run.exists()
    assert not stale_zygote.exists()
    assert not stale_socket.exists()
