"""Runs outlive their server: a SIGKILLed node's run is taken again, a SIGTERMed one hands back."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.harness import Service, await_result, bearer, line_count, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


async def prepare(service: Service, *, migrated: bool = False) -> str:
    """Register tests/workflows/slow.py and create a key through the CLI; returns the key.

    The two commands run at once when the database is ``migrated`` already (they would both
    create the schema of a fresh one).
    """
    add = service.cli("workflows", "add", "tests/workflows/slow.py")
    create = service.cli("keys", "create", "--name", "e2e")
    if migrated:
        added, created = await asyncio.gather(add, create)
    else:
        added, created = await add, await create
    assert added.stdout.startswith("registered slow version 1 "), added.describe()
    key = created.last_line
    assert key.startswith("cwk-"), created.describe()
    return key


async def start_slow(url: str, key: str, seconds: float, marker: Path) -> str:
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        response = await http.post(
            "/run_async/slow/",
            json={"seconds": seconds, "marker": str(marker)},
            headers=bearer(key),
        )
    assert response.status_code == 200, response.text
    run_id: str = response.json()["request_id"]
    return run_id


async def show(service: Service, run_id: str) -> dict[str, object]:
    shown = await service.cli("runs", "show", run_id)
    record: dict[str, object] = json.loads(shown.stdout)
    assert record["request_id"] == run_id
    return record


async def test_run_of_a_killed_server_completes_exactly_once_after_restart(
    service: Service,
) -> None:
    key = await prepare(service)
    marker = service.tmp / "marker"
    first = await service.start_ready(
        SWITCHBOARD_RUNTIME__LEASE_SECONDS="2", SWITCHBOARD_RUNTIME__REGISTER_EXAMPLES="false"
    )
    run_id = await start_slow(first.url, key, 2, marker)
    await wait_until(lambda: line_count(marker) >= 1, 60, "the slow workflow to start")

    first.signal(signal.SIGKILL)
    assert await first.wait_exit(10) == -signal.SIGKILL
    second = await service.start_ready(
        SWITCHBOARD_RUNTIME__LEASE_SECONDS="2", SWITCHBOARD_RUNTIME__REGISTER_EXAMPLES="false"
    )

    record = await await_result(second.url, key, run_id, timeout=60)
    assert record["status"] == "completed", record
    assert record["responseStatus"] == 200
    assert record["responseJson"] == {"slept": 2}
    assert record["attempts"] == 2
    assert line_count(marker) == 2, "the workflow ran once before the kill and once after"

    shown = await show(service, run_id)
    assert shown["status"] == "completed"
    assert shown["attempts"] == 2

    async with httpx.AsyncClient(base_url=second.url, timeout=30) as http:
        response = await http.get(f"/logs/{run_id}", headers=bearer(key))
    assert response.status_code == 200
    entries = [json.loads(line) for line in response.text.splitlines() if line]
    system = [entry["message"] for entry in entries if entry["stream"] == "system"]
    assert len([m for m in system if m.startswith("run completed")]) == 1, system
    assert any(m.startswith("run started: slow (attempt 2)") for m in system), system
    assert any(entry["message"] == "sleeping" for entry in entries), entries
    # Still exactly once: the first attempt's workflow died with its server and never answers.
    assert line_count(marker) == 2


async def test_sigterm_hands_the_running_run_back_and_it_completes_after_restart(
    service: Service,
) -> None:
    first = await service.start_ready(
        SWITCHBOARD_RUNTIME__LEASE_SECONDS="30", SWITCHBOARD_RUNTIME__SHUTDOWN_GRACE="1"
    )
    key = await prepare(service, migrated=True)
    marker = service.tmp / "marker"
    # Longer than the 1 s shutdown grace, so the run cannot finish before the server stops.
    run_id = await start_slow(first.url, key, 4, marker)
    await wait_until(lambda: line_count(marker) >= 1, 60, "the slow workflow to start")

    stopping = time.monotonic()
    first.signal(signal.SIGTERM)
    assert await first.wait_exit(25) == 0
    assert time.monotonic() - stopping < 4, "the server outlived its 1 s shutdown grace"
    assert f"run {run_id}: handed back to the queue at shutdown" in first.stderr

    shown = await show(service, run_id)
    assert shown["status"] == "queued", shown
    assert shown["completedAt"] is None and shown["responseJson"] is None
    assert line_count(marker) == 1

    second = await service.start_ready(SWITCHBOARD_RUNTIME__LEASE_SECONDS="30")
    record = await await_result(second.url, key, run_id, timeout=60)
    assert record["status"] == "completed", record
    assert record["responseJson"] == {"slept": 4}
    assert record["attempts"] == 1, "a run handed back at shutdown does not count an attempt"
    assert line_count(marker) == 2
