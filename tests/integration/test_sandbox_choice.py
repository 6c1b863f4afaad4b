"""Which runner the server chooses: runtime.sandbox = auto | bwrap | process.

``bwrap`` is a promise of isolation: a host that cannot keep it makes the server refuse to start
(never a silent downgrade). ``auto`` falls back to plain processes, loudly, and says so in
/healthz. Here the host "cannot" because bubblewrap is not on PATH.
"""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest
from aiohttp import web

from switchboard.app import create_app
from switchboard.sandboxing import SandboxUnavailable
from tests.conftest import LiveFactory, free_port, make_settings


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
