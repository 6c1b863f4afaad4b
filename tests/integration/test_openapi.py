"""``/openapi.json`` describes what the server serves, and the server keeps to it: schemathesis
fuzzes every operation with an admin key (a few examples each, bounded in time) and checks that
no answer is a 5xx and every answer matches its schema."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import Live, LiveFactory
from triggers.auth import KeyRole

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")


async def test_the_document_covers_every_surface(live: Live) -> None:
    async with httpx.AsyncClient(base_url=live.url, timeout=20) as http:
        document = (await http.get("/openapi.json")).json()
    assert document["openapi"] == "3.1.0"
    paths = document["paths"]
    for path in (
        "/api/v1/runs",
        "/api/v1/runs/{run_id}",
        "/api/v1/runs/{run_id}/cancel",
        "/api/v1/runs/{run_id}/replay",
        "/api/v1/runs/bulk",
        "/api/v1/workflows/{workflow_id}",
        "/api/v1/keys",
        "/api/v1/keys/{key_id}",
        "/api/v1/schedules",
        "/schedules/{schedule_id}/preview",
        "/run/{service_id}",
        "/run_async/{service_id}/{path}",
        "/result/{request_id}",
        "/request/{request_id}",
        "/logs/{request_id}",
        "/file",
        "/provision-request",
        "/api/v1/triggers",
        "/api/v1/inbox",
    ):
        assert path in paths, path
    listing = paths["/api/v1/runs"]["get"]
    status = next(p for p in listing["parameters"] if p["name"] == "status")
    assert status["explode"] is True
    answer = listing["responses"]["200"]["content"]["application/json"]["schema"]
    assert answer == {"$ref": "#/components/schemas/RunPage"}
    assert "RunDetail" in document["components"]["schemas"]


@pytest.mark.timeout(300)
async def test_schemathesis_finds_no_server_error_and_no_answer_off_its_schema(
    live_factory: LiveFactory, database_url: str, tmp_path: Path
) -> None:
    if not database_url.startswith("sqlite"):
        pytest.skip("the routes are the same on PostgreSQL: one fuzzing run is enough")
    # /logs follows a run (a husk the fuzzer provisions) until it ends: here for 2 s at most.
    live = await live_factory.start(runtime={"logs_max_seconds": 2})
    admin_key, _ = await live.services.keys.create(role=KeyRole.ADMIN, name="fuzz")
    # The key reaches the fuzzer through its environment, never its argv.
    config = tmp_path / "schemathesis.toml"
    config.write_text('headers = { Authorization = "Bearer ${FUZZ_KEY}" }\n', encoding="utf-8")
    process = await asyncio.create_subprocess_exec(
        str(SCHEMATHESIS),
        "--config-file",
        str(config),
        "run",
        f"{live.url}/openapi.json",
        "--checks",
        "not_a_server_error,response_schema_conformance,status_code_conformance",
        "--max-examples",
        "3",
        "--phases",
        "examples,fuzzing",
        "--request-timeout",
        "10",
        "--seed",
        "1",
        "--continue-on-failure",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "FUZZ_KEY": admin_key},
        cwd=tmp_path,
    )
    async with asyncio.timeout(280):
        output, _ = await process.communicate()
    assert process.returncode == 0, output.decode()[-6000:]
