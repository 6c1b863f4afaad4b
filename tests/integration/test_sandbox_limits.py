"""Per-workflow limits end to end: the ``[tool.switchboard]`` table of a registered workflow, a run
through the runtime API that breaks a limit, and the error naming it in the request record and in
the run's logs, while the server goes on answering other runs.

(tests/integration/test_sandbox.py drives the runner directly for every attack; this is the same
sandbox behind the real server, workers and registry.)
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import WORKFLOWS, Live, LiveFactory

pytestmark = [
    pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed"),
    # The limits are the sandbox's, not the database's: one store is enough (and saves CI time).
    pytest.mark.parametrize("database_url", ["sqlite"], indirect=True),
]

LIMITS_TABLE = """# [tool.switchboard]
# memory = "128MiB"
# pids = 32
# timeout = 3
# network = "none"
"""


@pytest.fixture
async def greedy(live_factory: LiveFactory, tmp_path: Path) -> Live:
    """A server with the sandbox on, and the hostile workflow registered as ``greedy`` with
    tight limits of its own (the same dependencies, so the same built environment)."""
    live = await live_factory.start(runtime={"sandbox": "bwrap", "run_timeout": 60})
    source = (WORKFLOWS / "hostile.py").read_text()
    limited = source.replace("# [tool.env-checker]\n", LIMITS_TABLE + "# [tool.env-checker]\n", 1)
    assert limited != source
    path = tmp_path / "greedy" / "greedy.py"
    path.parent.mkdir()
    path.write_text(limited)
    await live.services.registry.add(path, "greedy")
    await live.register("hello")
    return live


async def start(http: httpx.AsyncClient, service: str, body: dict[str, Any]) -> str:
    answer = await http.post(f"/run_async/{service}/", json=body)
    assert answer.status_code == 200, answer.text
    request_id: str = answer.json()["request_id"]
    return request_id


async def finished(http: httpx.AsyncClient, request_id: str) -> dict[str, Any]:
    answer = await http.get(f"/result/{request_id}", params={"timeout": 60})
    assert answer.status_code == 200, answer.text
    record: dict[str, Any] = answer.json()
    return record


async def log_text(http: httpx.AsyncClient, request_id: str) -> str:
    answer = await http.get(f"/logs/{request_id}")
    assert answer.status_code == 200, answer.text
    return answer.text  # JSON lines


@pytest.mark.parametrize(
    ("attack", "status", "error"),
    [
        ("memory", "failed", "memory limit of 128 MiB exceeded"),
        ("fork_bomb", "failed", "process limit of 32 reached"),
        ("loop", "timed_out", "timed out after 3 s"),
    ],
)
async def test_a_broken_limit_is_named_in_the_record_and_the_logs(
    greedy: Live, attack: str, status: str, error: str
) -> None:
    async with httpx.AsyncClient(
        base_url=greedy.url, headers={"Authorization": greedy.key}, timeout=90
    ) as http:
        bad = await start(http, "greedy", {"attack": attack})
        # Other runs are answered while the attack runs (the attack starts first).
        good = await asyncio.gather(
            *(http.post("/run/hello/", json={"name": f"n{i}"}) for i in range(3))
        )
        record = await finished(http, bad)
        logs = await log_text(http, bad)

    assert [answer.status_code for answer in good] == [200, 200, 200]
    assert [answer.json() for answer in good] == [{"message": f"Hello n{i}!"} for i in range(3)]
    assert record["status"] == status, record
    assert record["error"] == error, record
    assert error in logs
