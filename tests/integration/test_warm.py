"""Warm reuse for real: kept sandboxed processes, their keys, their logs, their end.

Real sandboxes (fresh and zygote children), real cgroups; ``tests/workflows/warm.py`` answers with
a token made once per process and a count of the requests it served, so two runs that got the
same token were served by the same process.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from codewords_client import AsyncCodewordsClient

from core.models import Invocation, RunStatus, WorkflowLimits
from dispatch.registry import Workflow
from dispatch.sandbox.cgroups import CgroupLayout
from dispatch.sandbox.sandbox_runner import SandboxRunner
from dispatch.sandbox.warm_pool import WarmPool
from dispatch.sandbox.zygote_pool import ZygotePool
from tests.conftest import LiveFactory
from tests.integration.sandbox_helpers import sandbox_settings_for
from tests.runs import (
    WORKFLOWS,
    BuiltEnvironment,
    Logs,
    invocation,
    workflow,
)

WARM = WORKFLOWS / "warm.py"


@dataclass
class Warm:
    runner: SandboxRunner
    pool: WarmPool
    runs_dir: Path
    cgroups: CgroupLayout

    def left(self) -> list[str]:
        """Run directories and run cgroups that exist now."""
        found = [path.name for path in self.runs_dir.iterdir()]
        for parent in self.cgroups.parents():
            found += [path.name for path in parent.glob("run-*")]
        return found


WarmFactory = Callable[..., Warm]


@pytest.fixture(params=[False, True], ids=["fresh", "zygote"])
async def make_warm(
    request: pytest.FixtureRequest,
    host_sandbox: tuple[Path, CgroupLayout],
    base_env: dict[str, str],
) -> AsyncIterator[WarmFactory]:
    """Sandbox runners with a warm pool (idle TTL as asked), each run a fresh sandbox or a
    zygote's child; torn down, and checked to leave nothing, at the end."""
    runs_dir, cgroups = host_sandbox
    settings = sandbox_settings_for(runs_dir, cgroups)
    zygotes = ZygotePool(settings, Path(f"{runs_dir}-z")) if request.param else None
    made: list[Warm] = []

    def make(idle_ttl: float, cap: int = 8) -> Warm:
        pool = WarmPool(idle_ttl=idle_ttl, cap=cap)
        runner = SandboxRunner(settings, base_env=base_env, zygotes=zygotes, warm=pool)
        made.append(Warm(runner, pool, Path(runs_dir), cgroups))
        return made[-1]

    yield make
    for warm in made:
        await warm.runner.close()
        assert len(warm.pool) == 0
    if zygotes is not None:
        await zygotes.close()
    assert made and made[0].left() == []


def run_of(owner: str = "owner-1", body: dict[str, object] | None = None) -> Invocation:
    """An invocation with its own run id and its own run-scoped key, as a worker makes them."""
    run_id = f"req_warm{uuid.uuid4().hex[:12]}"
    plain = invocation(body or {}, run_id=run_id)
    key = f"cwk-run.{run_id}.{owner}.0.signature"
    return plain.model_copy(
        update={"owner_id": owner, "env": {**plain.env, "CODEWORDS_API_KEY": key}}
    )


def warm_workflow(built: BuiltEnvironment, **limits: Any) -> Workflow:
    plain = workflow(built, WARM)
    checked = {**plain.limits.model_dump(), "warm": True, **limits}
    return replace(plain, limits=WorkflowLimits.model_validate(checked))


async def answer(warm: Warm, run: Invocation, flow: Workflow, logs: Logs | None = None) -> Any:
    outcome = await warm.runner.run(run, flow, logs if logs is not None else Logs())
    assert outcome.status is RunStatus.COMPLETED, outcome.error
    return json.loads(outcome.response_body or b"")


def running(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie (one that host init has yet to reap)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


async def test_two_runs_by_one_owner_share_a_process_each_with_its_own_key_and_logs(
    make_warm: WarmFactory, built_environment: BuiltEnvironment
) -> None:
    warm = make_warm(600)
    flow = warm_workflow(built_environment)
    first_run, second_run = run_of(), run_of()
    first_logs, second_logs = Logs(), Logs()

    first = await answer(warm, first_run, flow, first_logs)
    kept = warm.left()
    second = await answer(warm, second_run, flow, second_logs)

    assert first["process"] == second["process"]
    assert (first["served"], second["served"]) == (1, 2)
    assert first["key_sha256"] == sha256(first_run.env["CODEWORDS_API_KEY"])
    assert second["key_sha256"] == sha256(second_run.env["CODEWORDS_API_KEY"])
    assert second["switchboard_headers"] == [] and second["warm_env"] is None
    assert f"visit 1 of {first['process']}" in first_logs.text()
    assert "visit 2" not in first_logs.text()
    assert f"visit 2 of {first['process']}" in second_logs.text()
    assert "visit 1" not in second_logs.text()
    assert first_run.run_id in kept and second_run.run_id not in kept
    assert warm.left() == kept and len(warm.pool) == 1

    await warm.runner.close()  # the runtime's shutdown

    assert len(warm.pool) == 0 and warm.left() == []


async def test_another_owner_version_or_limits_get_a_fresh_process(
    make_warm: WarmFactory, built_environment: BuiltEnvironment
) -> None:
    warm = make_warm(600)
    flow = warm_workflow(built_environment)

    mine = await answer(warm, run_of("owner-1"), flow)
    theirs = await answer(warm, run_of("owner-2"), flow)
    newer = await answer(warm, run_of("owner-1"), replace(flow, version=2))
    other_network = await answer(
        warm, run_of("owner-1"), warm_workflow(built_environment, network="none")
    )
    mine_again = await answer(warm, run_of("owner-1"), flow)

    processes = [mine["process"], theirs["process"], newer["process"], other_network["process"]]
    assert len(set(processes)) == 4
    assert [theirs["served"], newer["served"], other_network["served"]] == [1, 1, 1]
    assert mine_again["process"] == mine["process"] and mine_again["served"] == 2
    assert len(warm.pool) == 4


async def test_past_the_cap_the_least_recently_used_idle_process_goes(
    make_warm: WarmFactory, built_environment: BuiltEnvironment
) -> None:
    warm = make_warm(600, cap=2)
    flow = warm_workflow(built_environment)

    first = await answer(warm, run_of("owner-1"), flow)
    second = await answer(warm, run_of("owner-2"), flow)
    first_again = await answer(warm, run_of("owner-1"), flow)  # owner-2's is now the LRU one
    third = await answer(warm, run_of("owner-3"), flow)
    second_again = await answer(warm, run_of("owner-2"), flow)

    assert first_again["process"] == first["process"] and first_again["served"] == 2
    assert third["served"] == 1
    assert second_again["process"] != second["process"] and second_again["served"] == 1
    assert len(warm.pool) == 2


async def test_an_idle_process_is_torn_down_after_the_ttl(
    make_warm: WarmFactory, built_environment: BuiltEnvironment
) -> None:
    warm = make_warm(1.0)
    run = run_of()
    await answer(warm, run, warm_workflow(built_environment))
    parked = time.monotonic()
    pids = warm.cgroups.run_cgroup(run.run_id).pids()
    assert pids and len(warm.pool) == 1 and run.run_id in warm.left()

    async with asyncio.timeout(30):
        await warm.pool.wait_until_empty()

    assert time.monotonic() - parked >= 0.9
    assert len(warm.pool) == 0
    assert warm.left() == []
    assert [pid for pid in pids if running(pid)] == []


async def test_a_workflow_that_did_not_opt_in_never_reuses(
    make_warm: WarmFactory, built_environment: BuiltEnvironment
) -> None:
    warm = make_warm(600)
    flow = workflow(built_environment, WARM)  # the header's warm = true is not in these limits

    first = await answer(warm, run_of(), flow)
    left_after_first = warm.left()
    second = await answer(warm, run_of(), flow)

    assert first["process"] != second["process"]
    assert (first["served"], second["served"]) == (1, 1)
    assert first["warm_env"] is None
    assert left_after_first == [] and warm.left() == [] and len(warm.pool) == 0


@pytest.mark.parametrize(
    ("body", "timeout", "status", "error"),
    [
        pytest.param({"fail": True}, 60, RunStatus.FAILED, "failed on purpose", id="fails"),
        pytest.param({"sleep": 30}, 2, RunStatus.TIMED_OUT, "timed out after 2 s", id="times-out"),
        pytest.param(
            {"hoard_mib": 1024},
            60,
            RunStatus.FAILED,
            "memory limit of 128 MiB exceeded",
            id="breaks-its-memory-limit",
        ),
    ],
)
async def test_a_run_that_fails_times_out_or_breaks_a_limit_ends_its_warm_process(
    make_warm: WarmFactory,
    built_environment: BuiltEnvironment,
    body: dict[str, object],
    timeout: float,
    status: RunStatus,
    error: str,
) -> None:
    warm = make_warm(600)
    flow = warm_workflow(built_environment, memory="128MiB")
    first = await answer(warm, run_of(), flow)

    reused = run_of(body=body).model_copy(update={"timeout": timeout})
    outcome = await warm.runner.run(reused, flow, Logs())
    left_after_failure = warm.left()
    after = await answer(warm, run_of(), flow)

    assert outcome.status is status
    assert error in (outcome.error or "")
    assert left_after_failure == [] and len(warm.pool) == 1
    assert after["process"] != first["process"] and after["served"] == 1


async def test_a_first_run_that_fails_is_not_kept(
    make_warm: WarmFactory, built_environment: BuiltEnvironment
) -> None:
    warm = make_warm(600)

    outcome = await warm.runner.run(
        run_of(body={"fail": True}), warm_workflow(built_environment), Logs()
    )

    assert outcome.status is RunStatus.FAILED
    assert warm.left() == [] and len(warm.pool) == 0


async def test_a_registered_warm_workflow_is_reused_through_the_api_with_each_run_s_key(
    live_factory: LiveFactory,
) -> None:
    live = await live_factory.start(runtime={"sandbox": "bwrap", "warm_idle_ttl": 600})
    await live.register("warm")

    async with AsyncCodewordsClient(base_url=live.url, api_key=live.key) as client:
        first = await client.run("warm", {})
        second = await client.run("warm", {})
    async with httpx.AsyncClient(base_url=live.url) as http:
        health = (await http.get("/healthz")).json()

    assert first.status_code == second.status_code == 200, (first.text, second.text)
    assert first.json()["process"] == second.json()["process"]
    assert second.json()["served"] == 2
    assert first.json()["key_run"] == first.headers["X-Request-Id"]
    assert second.json()["key_run"] == second.headers["X-Request-Id"]
    assert health["warm"] == 1, health
