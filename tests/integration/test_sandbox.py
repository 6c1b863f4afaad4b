"""The bubblewrap sandbox for real: hostile workflows against real namespaces, cgroups and rlimits.

Each attack runs next to a well-behaved run that must still answer, and must leave no process,
cgroup or run directory behind. Skipped (with the reason) only where the host cannot make
sandboxes at all; CI installs bubblewrap and slirp4netns (scripts/setup), so there they run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import httpx
import pytest
from codewords_client import AsyncCodewordsClient

from core.models import Outcome, RunStatus, WorkflowLimits
from dispatch.registry import Workflow
from dispatch.sandbox.cgroups import CgroupLayout
from dispatch.sandbox.sandbox_runner import SandboxRunner
from tests.conftest import LiveFactory
from tests.integration.sandbox_helpers import (
    memory_contains,
    parent_of,
    processes_with,
    zygotes_only,
)
from tests.runs import (
    HELLO,
    SECRET,
    WORKFLOWS,
    BuiltEnvironment,
    Logs,
    invocation,
    workflow,
)

HOSTILE = WORKFLOWS / "hostile.py"
LIMITS = WorkflowLimits.model_validate({"memory": "256MiB", "pids": 64, "network": "none"})


@dataclass(frozen=True)
class Sandbox:
    runner: SandboxRunner
    runs_dir: Path
    cgroups: CgroupLayout


@pytest.fixture
def sandbox(sandbox_runner: SandboxRunner, host_sandbox: tuple[Path, CgroupLayout]) -> Sandbox:
    """The sandbox runner, with each run a fresh sandbox or a zygote's child: same assertions."""
    runs_dir, cgroups = host_sandbox
    return Sandbox(sandbox_runner, runs_dir, cgroups)


def limited(built: BuiltEnvironment, source: Path, **limits: object) -> Workflow:
    return replace(workflow(built, source), limits=LIMITS.model_copy(update=limits))


def assert_nothing_left(sandbox: Sandbox) -> None:
    assert list(sandbox.runs_dir.iterdir()) == []
    for parent in sandbox.cgroups.parents():
        assert list(parent.glob("run-*")) == []


async def attack_beside_a_good_run(
    sandbox: Sandbox,
    built: BuiltEnvironment,
    body: dict[str, object],
    timeout: float = 30,
    **limits: object,
) -> tuple[Outcome, Logs]:
    """Run the hostile workflow and meanwhile hello, which must answer whatever the attack does."""
    logs = Logs()
    hostile = sandbox.runner.run(
        invocation(body, run_id=f"req_bad{uuid.uuid4().hex[:12]}", timeout=timeout),
        limited(built, HOSTILE, **limits),
        logs,
    )
    good = sandbox.runner.run(
        invocation({"name": "Ada"}, run_id=f"req_good{uuid.uuid4().hex[:12]}"),
        limited(built, HELLO),
        Logs(),
    )
    outcome, good_outcome = await asyncio.gather(hostile, good)
    assert good_outcome.status is RunStatus.COMPLETED, good_outcome.error
    assert json.loads(good_outcome.response_body or b"") == {"message": "Hello Ada!"}
    assert_nothing_left(sandbox)
    return outcome, logs


@pytest.mark.parametrize(
    ("network", "interfaces"), [("none", ["lo"]), ("internet", ["lo", "tap0"])]
)
async def test_a_sandboxed_run_sees_only_what_it_owns(
    sandbox: Sandbox, built_environment: BuiltEnvironment, network: str, interfaces: list[str]
) -> None:
    outcome, _ = await attack_beside_a_good_run(
        sandbox, built_environment, {"attack": "whoami"}, network=network
    )

    assert outcome.status is RunStatus.COMPLETED, outcome.error
    seen = json.loads(outcome.response_body or b"")
    assert seen["uid"] == 1000
    assert seen["hostname"] == "sandbox"
    assert seen["home"] == "/run/work" and seen["home_writable"] and seen["tmp_writable"]
    assert set(seen["root"]) <= {
        "usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "etc", "proc", "dev", "tmp",
        "run", "workflow", "opt", "root",
    }  # fmt: skip
    assert seen["interfaces"] == interfaces
    assert seen["pids"][0] == 1 and len(seen["pids"]) < 5


@pytest.mark.parametrize(
    ("body", "error"),
    [
        pytest.param({"attack": "read", "path": "/etc/shadow"}, "FileNotFoundError", id="shadow"),
        pytest.param(
            {"attack": "read", "path": str(WORKFLOWS / "env_dump.py")},
            "FileNotFoundError",
            id="another-workflow",
        ),
        pytest.param({"attack": "write", "path": "/usr/owned"}, "Read-only file system", id="usr"),
        pytest.param(
            {"attack": "write", "path": "/workflow/main.py"}, "Read-only file system", id="source"
        ),
    ],
)
async def test_files_outside_the_sandbox_cannot_be_read_or_written(
    sandbox: Sandbox,
    built_environment: BuiltEnvironment,
    body: dict[str, object],
    error: str,
) -> None:
    outcome, _ = await attack_beside_a_good_run(sandbox, built_environment, body)

    assert outcome.status is RunStatus.FAILED
    assert error in (outcome.error or "")


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """A server data dir outside /tmp, readable by anyone: the run's own tmpfs on /tmp would hide
    one under /tmp (pytest's ``tmp_path``) whatever the mount rules, and permissions would stop
    the sandbox uid; here only the mount rule (nothing of the host but what a run owns) can."""
    path = Path(tempfile.mkdtemp(prefix="sb-data-", dir="/var/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


async def test_the_data_dir_and_the_environment_are_out_of_reach(
    sandbox: Sandbox, built_environment: BuiltEnvironment, data_dir: Path
) -> None:
    assert not data_dir.is_relative_to("/tmp")
    secret = data_dir / "secret.key"
    secret.write_text("server secret")
    secret.chmod(0o644)
    site = next((built_environment.env / "lib").glob("python*/site-packages"))

    read, _ = await attack_beside_a_good_run(
        sandbox, built_environment, {"attack": "read", "path": str(secret)}
    )
    write, _ = await attack_beside_a_good_run(
        sandbox, built_environment, {"attack": "write", "path": str(site / "fastapi/__init__.py")}
    )

    assert read.status is RunStatus.FAILED
    assert "FileNotFoundError" in (read.error or "")
    assert write.status is RunStatus.FAILED
    assert "Read-only file system" in (write.error or "")


async def test_a_fork_bomb_hits_the_process_limit(
    sandbox: Sandbox, built_environment: BuiltEnvironment
) -> None:
    outcome, _ = await attack_beside_a_good_run(sandbox, built_environment, {"attack": "fork_bomb"})

    assert outcome.status is RunStatus.FAILED
    assert outcome.error == "process limit of 64 reached"


async def test_allocating_10_gib_hits_the_memory_limit(
    sandbox: Sandbox, built_environment: BuiltEnvironment
) -> None:
    outcome, _ = await attack_beside_a_good_run(sandbox, built_environment, {"attack": "memory"})

    assert outcome.status is RunStatus.FAILED
    assert outcome.error == "memory limit of 256 MiB exceeded"


async def test_an_endless_loop_times_out(
    sandbox: Sandbox, built_environment: BuiltEnvironment
) -> None:
    outcome, _ = await attack_beside_a_good_run(
        sandbox, built_environment, {"attack": "loop"}, timeout=2
    )

    assert outcome.status is RunStatus.TIMED_OUT
    assert outcome.error == "timed out after 2 s"


async def test_a_setsid_double_fork_that_ignores_sigterm_does_not_outlive_the_run(
    sandbox: Sandbox, built_environment: BuiltEnvironment
) -> None:
    marker = f"{uuid.uuid4().int % 10**6 + 10**6}.25"  # `sleep` takes it; unique on the host

    outcome, _ = await attack_beside_a_good_run(
        sandbox, built_environment, {"attack": "escape_session", "marker": marker}
    )

    assert outcome.status is RunStatus.COMPLETED, outcome.error
    assert processes_with(f"sleep {marker}") == []


@pytest.fixture
async def host_service() -> AsyncIterator[int]:
    """A TCP service on the host's 127.0.0.1 that answers anyone who connects."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"host secrets")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


@pytest.mark.parametrize(
    ("network", "host", "error"),
    [
        pytest.param("none", "1.1.1.1", "Network is unreachable", id="none-internet"),
        pytest.param("none", "127.0.0.1", "Connection refused", id="none-host-loopback"),
        pytest.param("internet", "127.0.0.1", "Connection refused", id="internet-loopback"),
        pytest.param("internet", "10.0.2.2", "Network is unreachable", id="internet-slirp-gateway"),
    ],
)
async def test_the_host_network_is_out_of_reach(
    sandbox: Sandbox,
    built_environment: BuiltEnvironment,
    host_service: int,
    network: str,
    host: str,
    error: str,
) -> None:
    body = {"attack": "connect", "host": host, "port": host_service}

    outcome, _ = await attack_beside_a_good_run(sandbox, built_environment, body, network=network)

    assert outcome.status is RunStatus.FAILED, outcome.response_body
    assert error in (outcome.error or "")


async def test_secrets_are_not_in_any_command_line(
    sandbox: Sandbox, built_environment: BuiltEnvironment
) -> None:
    logs = Logs()
    run = sandbox.runner.run(
        invocation({"seconds": 30}, run_id="req_secret" + uuid.uuid4().hex[:12]),
        limited(built_environment, WORKFLOWS / "slow.py"),
        logs,
    )
    task = asyncio.create_task(run)
    await logs.wait_for("sleeping")

    assert processes_with(SECRET) == []

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert_nothing_left(sandbox)


def zygote_children() -> list[int]:
    """Keepers and pids 1 forked from a zygote (they keep its command line)."""
    named = processes_with("zygote_server.py")
    zygotes = set(zygotes_only(named))
    return [pid for pid in named if pid not in zygotes and parent_of(pid) in zygotes]


@pytest.mark.parametrize("sandbox_runner", [True], ids=["zygote"], indirect=True)
async def test_a_run_cancelled_at_any_moment_of_its_start_leaves_nothing(
    sandbox: Sandbox, built_environment: BuiltEnvironment
) -> None:
    # A cancel (the operator's, or a lost lease) may land while the zygote is asked to fork,
    # before the child is seen: the child forked meanwhile must give up, not wait forever.
    first = await sandbox.runner.run(
        invocation({"name": "Ada"}, run_id="req_zwarm" + uuid.uuid4().hex[:12]),
        limited(built_environment, HELLO),
        Logs(),
    )
    assert first.status is RunStatus.COMPLETED, first.error
    for moment in range(0, 60, 3):  # ms after the start: the cancel's moment, not a wait
        task = asyncio.create_task(
            sandbox.runner.run(
                invocation({"seconds": 30}, run_id=f"req_zcancel{moment}_{uuid.uuid4().hex[:8]}"),
                limited(built_environment, WORKFLOWS / "slow.py"),
                Logs(),
            )
        )
        await asyncio.sleep(moment / 1000)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert_nothing_left(sandbox)
        async with asyncio.timeout(10):  # a child that was forked gives up at once
            while True:
                if not zygote_children():
                    break
                await asyncio.sleep(0.02)  # polling a condition, bounded by the timeout


@pytest.mark.parametrize("sandbox_runner", [True], ids=["zygote"], indirect=True)
async def test_the_zygote_never_holds_a_runs_secrets(
    sandbox: Sandbox, built_environment: BuiltEnvironment
) -> None:
    # The run's environment (its key, the user's secrets) goes to the run's own pid 1, never
    # through the zygote: a later run forked from the zygote could otherwise find it in memory.
    for _ in range(2):
        outcome = await sandbox.runner.run(
            invocation({"name": "Ada"}, run_id="req_zsecret" + uuid.uuid4().hex[:12]),
            limited(built_environment, HELLO),
            Logs(),
        )
        assert outcome.status is RunStatus.COMPLETED, outcome.error
    zygotes = zygotes_only(processes_with("zygote_server.py"))

    assert zygotes, "no zygote process found"
    assert [pid for pid in zygotes if memory_contains(pid, SECRET.encode())] == []


@pytest.mark.parametrize("network", ["none", "internet"])
async def test_the_runtime_api_works_from_inside_under_both_network_policies(
    live_factory: LiveFactory, network: str
) -> None:
    live = await live_factory.start(runtime={"sandbox": "bwrap", "limits": {"network": network}})
    await live.register("caller")

    async with AsyncCodewordsClient(base_url=live.url, api_key=live.key) as client:
        response = await client.run("caller", {"service_id": "echo", "inputs": {"hi": network}})
    async with httpx.AsyncClient(base_url=live.url) as http:
        health = (await http.get("/healthz")).json()

    assert health["sandbox"] == "bwrap", health
    assert health["zygotes"] == 1, health
    assert response.status_code == 200, response.text
    assert response.json() == {"inner": {"hi": network}}
