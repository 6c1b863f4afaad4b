"""`switchboard serve` with nothing configured is the demo: an admin key and the examples."""

from __future__ import annotations

import signal
import stat
from pathlib import Path
from typing import Any

import httpx
import pytest
from codewords_client import AsyncCodewordsClient

from tests.e2e.conftest import ServiceFactory
from tests.e2e.harness import ServerProcess, bearer, wait_until

pytestmark = pytest.mark.e2e


def announced_key(server: ServerProcess) -> str | None:
    """The key on the line after "Admin API key …" on the server's stdout, if it printed one."""
    lines = server.stdout.splitlines()
    for number, line in enumerate(lines[:-1]):
        if line.startswith("Admin API key"):
            return lines[number + 1].strip()
    return None


async def healthy(server: ServerProcess) -> dict[str, Any]:
    """Wait for /healthz to answer 200; until then it may only say "starting" (503)."""

    async def ok() -> dict[str, Any] | None:
        response = await server.health()
        if response is None:
            return None
        body: dict[str, Any] = response.json()
        if response.status_code == 200:
            return body
        assert (response.status_code, body["status"]) == (503, "starting"), body
        return None

    return await wait_until(ok, 60, "/healthz to report the demo ready")


async def test_unconfigured_serve_is_the_demo(
    make_service: ServiceFactory, workflow_cache: Path
) -> None:
    service = make_service(
        {
            "SWITCHBOARD_RUNTIME__ENV_DIR": str(workflow_cache / "envs"),
            "SWITCHBOARD_RUNTIME__UV_CACHE_DIR": str(workflow_cache / "uv"),
        }
    )
    first = service.start()
    health = await healthy(first)
    assert health["status"] == "ok" and health["database"] == "sqlite", health
    assert (service.data_dir / "switchboard.db").is_file()

    key = announced_key(first)
    assert key is not None and key.startswith("cwk-"), first.stdout
    key_file = service.data_dir / "admin.key"
    assert key_file.read_text().strip() == key
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert "Admin API key" not in first.stderr and key not in first.stderr

    async with AsyncCodewordsClient(base_url=first.url, api_key=key) as client:
        response = await client.run("hello", {"name": "Ada"})
    assert response.status_code == 200
    assert response.json() == {"message": "Hello Ada!"}

    first.signal(signal.SIGTERM)
    assert await first.wait_exit(20) == 0
    second = service.start()
    await healthy(second)
    assert announced_key(second) is None and "Admin API key" not in second.stdout
    assert key_file.read_text().strip() == key
    async with httpx.AsyncClient(base_url=second.url, timeout=30) as http:
        echoed = await http.post("/run/echo/", json={"again": True}, headers=bearer(key))
    assert (echoed.status_code, echoed.json()) == (200, {"again": True})
