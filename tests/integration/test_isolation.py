"""Between runs: nothing one run leaves behind reaches the next, whoever owns it, however it ran.

Owner A runs ``hostile.py``, which writes a marker file into every directory of its view it can;
then owner B runs ``bystander.py`` (another workflow with the same dependencies: the same
environment, the same zygote), which looks for the marker everywhere. Real sandboxes, real
zygotes, real warm processes (``host_sandbox`` in ``conftest.py`` checks the host).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import uvloop

from core.models import Invocation, Outcome, RunStatus, WorkflowLimits
from dispatch.registry import Workflow
from dispatch.sandbox.cgroups import CgroupLayout
from dispatch.sandbox.sandbox_runner import SandboxRunner
from dispatch.sandbox.warm_pool import WarmPool
from dispatch.sandbox.zygote_pool import ZygotePool
from tests.integration.sandbox_helpers import sandbox_settings_for
from tests.runs import (
    WORKFLOWS,
    BuiltEnvironment,
    Logs,
    invocation,
    workflow,
)

HOSTILE = WORKFLOWS / "hostile.py"
BYSTANDER = WORKFLOWS / "bystander.py"
# What a run may write to, in both modes: each one its own, gone with the run.
OWN = ("/tmp", "/dev/shm", "/dev/pts", "/run/work", "/run/switchboard")
# What the audit found a zygote's children sharing, and the rest of a run's view.
SHARED = ("/", "/etc", "/opt", "/opt/switchboard", "/run", "/dev", "/root")


def run_by(owner: str, body: Mapping[str, object]) -> Invocation:
    plain = invocation(body, run_id=f"req_iso{uuid.uuid4().hex[:12]}")
    return plain.model_copy(update={"owner_id": owner})


def limited(built: BuiltEnvironment, source: Path, **limits: object) -> Workflow:
    checked = {**WorkflowLimits().model_dump(), "memory": "256MiB", **limits}
    return replace(workflow(built, source), limits=WorkflowLimits.model_validate(checked))


async def answer(runner: SandboxRunner, run: Invocation, flow: Workflow) -> Any:
    outcome = await runner.run(run, flow, Logs())
    assert outcome.status is RunStatus.COMPLETED, outcome.error
    return json.loads(outcome.response_body or b"")


def own(path: str) -> bool:
    return any(path == mine or path.startswith(f"{mine}/") for mine in OWN)


def run_holding_an_inheritable_pipe(
    scenario: Callable[[], Coroutine[Any, Any, Outcome]], loop: str
) -> tuple[Outcome, bytes]:
    """``scenario`` driven on ``loop`` while this process holds an inheritable pipe, as a server
    may hold one it inherited; and what reached the pipe's read end meanwhile."""
    server_read, server_write = os.pipe()
    os.set_inheritable(server_write, True)
    os.set_blocking(server_read, False)
    try:
        outcome = uvloop.run(scenario()) if loop == "uvloop" else asyncio.run(scenario())
        os.close(server_write)
        try:
            reached = os.read(server_read, 4096)
        except BlockingIOError:  # nothing written, and someone else still holds the write end
            reached = b""
    finally:
        os.close(server_read)
        with contextlib.suppress(OSError):
            os.close(server_write)
    return outcome, reached


@pytest.fixture(params=[False, True], ids=["fresh", "zygote"])
async def zygotes(
    request: pytest.FixtureRequest, host_sandbox: tuple[Path, CgroupLayout]
) -> AsyncIterator[ZygotePool | None]:
    runs_dir, cgroups = host_sandbox
    if not request.param:
        yield None
        return
    pool = ZygotePool(sandbox_settings_for(runs_dir, cgroups), Path(f"{runs_dir}-z"))
    yield pool
    assert len(pool) == 1, "the runs did not share one zygote"
    await pool.close()


@pytest.mark.parametrize("warm", [False, True], ids=["cold", "warm"])
@pytest.mark.parametrize("network", ["none", "internet"])
async def test_what_one_owners_run_writes_no_later_run_of_another_owner_sees(
    zygotes: ZygotePool | None,
    host_sandbox: tuple[Path, CgroupLayout],
    base_env: dict[str, str],
    built_environment: BuiltEnvironment,
    network: str,
    warm: bool,
) -> None:
    runs_dir, cgroups = host_sandbox
    pool = WarmPool(idle_ttl=600, cap=8) if warm else None
    runner = SandboxRunner(
        sandbox_settings_for(runs_dir, cgroups), base_env=base_env, zygotes=zygotes, warm=pool
    )
    marker = f"trace-{uuid.uuid4().hex}"
    attacker = limited(built_environment, HOSTILE, network=network, warm=warm)
    try:
        left = await answer(
            runner, run_by("owner-a", {"attack": "leave_traces", "marker": marker}), attacker
        )
        if pool is not None:
            assert len(pool) == 1, "owner A's process was not kept warm"
        seen = await answer(
            runner,
            run_by("owner-b", {"marker": marker}),
            limited(built_environment, BYSTANDER, network=network),
        )
    finally:
        await runner.close()

    # Run 2 found nothing of run 1's, and has nowhere to write but its own places; run 1 could
    # write only to places of its own (so what it left there went with it).
    assert seen["found"] == []
    assert seen["ptys"] == ["ptmx"]
    assert [path for path in seen["writable"] if not own(path)] == []
    assert {"/tmp", "/dev/shm", "/run/work"} <= {str(Path(p).parent) for p in left["left"]}
    assert [path for path in left["left"] if not own(str(Path(path).parent))] == []
    assert set(SHARED).isdisjoint(seen["writable"])


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
@pytest.mark.parametrize("forked", [False, True], ids=["fresh", "zygote"])
def test_a_run_holds_only_its_own_descriptors_and_none_of_the_servers(
    host_sandbox: tuple[Path, CgroupLayout],
    base_env: dict[str, str],
    built_environment: BuiltEnvironment,
    caplog: pytest.LogCaptureFixture,
    loop: str,
    forked: bool,
) -> None:
    # Driven on uvloop too, as `switchboard serve` runs: uvloop's subprocesses inherit every
    # inheritable descriptor of the server (it does not implement close_fds), such as one the
    # server itself inherited from whatever started it, like the pipe held here.
    runs_dir, cgroups = host_sandbox
    settings = sandbox_settings_for(runs_dir, cgroups)
    marker = f"written-by-the-run-{uuid.uuid4().hex}"

    async def scenario() -> Outcome:
        zygotes = ZygotePool(settings, Path(f"{runs_dir}-z")) if forked else None
        runner = SandboxRunner(settings, base_env=base_env, zygotes=zygotes)
        try:
            body = {"attack": "descriptors", "marker": marker}
            return await runner.run(
                run_by("owner-a", body), limited(built_environment, HOSTILE), Logs()
            )
        finally:
            await runner.close()
            if zygotes is not None:
                assert len(zygotes) == 1, "the run fell back to a fresh sandbox"
                await zygotes.close()  # after the zygote's last output line reached the log

    with caplog.at_level(logging.INFO):
        outcome, reached = run_holding_an_inheritable_pipe(scenario, loop)

    assert outcome.status is RunStatus.COMPLETED, outcome.error
    held = json.loads(outcome.response_body or b"")["at_import"]
    extra = sorted(target.partition(":")[0] for fd, target in held.items() if int(fd) > 2)
    assert extra == ["pipe", "socket"], held  # its ready pipe, its runtime API forwarder
    assert marker.encode() not in reached
    assert marker not in caplog.text  # the server's log, where the zygote's output goes


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_code_run_at_interpreter_start_holds_none_of_the_servers_descriptors_either(
    host_sandbox: tuple[Path, CgroupLayout],
    base_env: dict[str, str],
    built_environment: BuiltEnvironment,
    loop: str,
) -> None:
    # A fresh sandbox's interpreter imports a sitecustomize found on PYTHONPATH (which a user
    # secret can set) before the launcher runs: what it was started with must already be clean.
    runs_dir, cgroups = host_sandbox
    settings = sandbox_settings_for(runs_dir, cgroups)
    marker = f"written-at-start-{uuid.uuid4().hex}"
    run = run_by("owner-a", {"attack": "whoami"})
    run = run.model_copy(
        update={"env": {**run.env, "PYTHONPATH": "/workflow/startup", "STARTUP_MARKER": marker}}
    )

    async def scenario() -> Outcome:
        runner = SandboxRunner(settings, base_env=base_env)
        try:
            return await runner.run(run, limited(built_environment, HOSTILE), Logs())
        finally:
            await runner.close()

    outcome, reached = run_holding_an_inheritable_pipe(scenario, loop)

    assert outcome.status is RunStatus.COMPLETED, outcome.error
    assert marker.encode() not in reached
