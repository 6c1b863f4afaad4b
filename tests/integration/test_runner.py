"""ProcessRunner and EnvironmentBuilder for real: uv builds the environment, workflows run in it.

One environment serves every test workflow (they share one PEP 723 header). Set
``SWITCHBOARD_TEST_CACHE`` to a directory to keep it (and uv's cache) between sessions.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.errors import WorkflowError
from core.models import RunStatus
from dispatch.environments import COMPLETE_MARKER, EnvironmentBuilder, python_of
from dispatch.pep723 import ScriptMetadata
from dispatch.registry import Workflow
from dispatch.sandbox.process_runner import ProcessRunner
from dispatch.sandbox.serving import MAX_LINE_BYTES
from tests.runs import (
    HELLO,
    REPO,
    SECRET,
    WORKFLOWS,
    BuiltEnvironment,
    Logs,
    invocation,
    workflow,
)


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    # Not tmp_path: Unix socket paths must stay under 108 bytes.
    path = Path("/tmp") / f"sb-test-{os.getpid()}"
    yield path
    for leftover in path.glob("*"):
        leftover.unlink()
    if path.exists():
        path.rmdir()


@pytest.fixture
def runner(socket_dir: Path, base_env: dict[str, str]) -> ProcessRunner:
    return ProcessRunner(socket_dir=socket_dir, startup_timeout=30, base_env=base_env)


def leftovers(directory: Path) -> list[Path]:
    return list(directory.iterdir())


def assert_group_gone(pid: int) -> None:
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)


# --- environments ---------------------------------------------------------------------------------


def test_environment_has_the_locked_stack(built_environment: BuiltEnvironment) -> None:
    assert (built_environment.env / COMPLETE_MARKER).exists()
    assert re.search(r"(?m)^codewords-client==0\.4\.11$", built_environment.lock)
    assert re.search(r"(?m)^uvicorn==", built_environment.lock)
    assert (
        built_environment.env.name
        == built_environment.builder.lock_hash(built_environment.lock)[:20]
    )


async def test_concurrent_builders_share_one_build_and_replace_a_half_built_one(
    built_environment: BuiltEnvironment,
    workflow_cache: Path,
    base_env: dict[str, str],
    tmp_path: Path,
) -> None:
    builder = EnvironmentBuilder(
        env_dir=tmp_path / "envs",
        uv_cache_dir=workflow_cache / "uv",
        python=Path(sys.executable),
        base_env=base_env,
    )
    await builder.interpreter()
    half_built = tmp_path / "envs" / builder.lock_hash(built_environment.lock)[:20]
    half_built.mkdir(parents=True)
    (half_built / "junk").write_text("left by a crashed build")

    first, second = await asyncio.gather(
        builder.ensure(built_environment.lock), builder.ensure(built_environment.lock)
    )

    assert first == second == half_built
    assert not (half_built / "junk").exists()
    assert (half_built / COMPLETE_MARKER).exists()
    process = await asyncio.create_subprocess_exec(
        str(python_of(first)), "-c", "import fastapi, uvicorn, codewords_client"
    )
    assert await process.wait() == 0


async def test_lock_refuses_a_python_the_runtime_does_not_have(
    built_environment: BuiltEnvironment,
) -> None:
    metadata = ScriptMetadata(dependencies=("fastapi",), requires_python=">=4")

    with pytest.raises(WorkflowError, match=r"requires Python >=4, but the runtime's interpreter"):
        await built_environment.builder.lock(metadata)


async def test_lock_names_uv_s_complaint(built_environment: BuiltEnvironment) -> None:
    metadata = ScriptMetadata(dependencies=("fastapi==0.0.0.0.1",), requires_python=None)

    with pytest.raises(
        WorkflowError, match=r"(?s)locking the workflow's dependencies failed.*fastapi"
    ):
        await built_environment.builder.lock(metadata)


# --- runs -----------------------------------------------------------------------------------------


async def test_hello_answers_and_its_log_line_arrives(
    built_environment: BuiltEnvironment, runner: ProcessRunner, socket_dir: Path
) -> None:
    logs = Logs()

    outcome = await runner.run(
        invocation({"name": "Ada"}), workflow(built_environment, HELLO), logs
    )

    assert outcome.status is RunStatus.COMPLETED, outcome.error
    assert outcome.response_status == 200
    assert json.loads(outcome.response_body or b"") == {"message": "Hello Ada!"}
    assert outcome.response_content_type == "application/json"
    assert ("stderr", "INFO:hello:greeting Ada") in logs.lines
    assert leftovers(socket_dir) == []


async def test_env_and_headers_reach_the_workflow_but_no_secret_in_argv(
    built_environment: BuiltEnvironment, runner: ProcessRunner
) -> None:
    logs = Logs()
    run = invocation({})

    outcome = await runner.run(run, workflow(built_environment, WORKFLOWS / "env_dump.py"), logs)

    assert outcome.status is RunStatus.COMPLETED, outcome.error
    seen = json.loads(outcome.response_body or b"")
    assert seen["env"] == {k: v for k, v in run.env.items() if k != "CODEWORDS_API_KEY"}
    assert seen["has_key"] is True
    assert seen["headers"] == {
        "X-Request-Id": run.run_id,
        "X-Correlation-Id": "corr-1",
        "Codewords-Caller-Id": "caller-1",
        "X-Scheduled-Request-Id": None,  # not a scheduled run
    }
    assert seen["argv"] == [str(WORKFLOWS / "env_dump.py")]
    assert SECRET not in " ".join(seen["argv"])
    assert ("stdout", "env checked") in logs.lines
    assert SECRET not in logs.text()


async def test_a_failing_workflow_keeps_its_500_body(
    built_environment: BuiltEnvironment, runner: ProcessRunner
) -> None:
    outcome = await runner.run(
        invocation({}), workflow(built_environment, WORKFLOWS / "fail.py"), Logs()
    )

    assert outcome.status is RunStatus.FAILED
    assert outcome.response_status == 500
    assert "boom" in (outcome.error or "")
    assert b"boom: the workflow failed on purpose" in (outcome.response_body or b"")


async def test_a_crash_mid_request_is_reported_with_the_exit_code(
    built_environment: BuiltEnvironment, runner: ProcessRunner
) -> None:
    logs = Logs()

    outcome = await runner.run(
        invocation({}), workflow(built_environment, WORKFLOWS / "crash.py"), logs
    )

    assert outcome.status is RunStatus.FAILED
    assert outcome.error == "workflow process crashed while handling the request (exit code 3)"
    assert ("stdout", "crashing") in logs.lines


async def test_a_timeout_kills_the_whole_process_group(
    built_environment: BuiltEnvironment, runner: ProcessRunner, socket_dir: Path
) -> None:
    logs = Logs()
    run = invocation({"seconds": 60}, timeout=2)

    outcome = await runner.run(run, workflow(built_environment, WORKFLOWS / "slow.py"), logs)

    assert outcome.status is RunStatus.TIMED_OUT
    assert outcome.error == "timed out after 2 s"
    match = re.search(r"pid=(\d+)", logs.text("stdout"))
    assert match is not None, "the workflow did not start within the timeout: " + logs.text()
    assert_group_gone(int(match.group(1)))
    assert leftovers(socket_dir) == []


async def test_cancelling_the_run_kills_the_process(
    built_environment: BuiltEnvironment, runner: ProcessRunner, socket_dir: Path, tmp_path: Path
) -> None:
    logs = Logs()
    marker = tmp_path / "marker"
    run = invocation({"seconds": 60, "marker": str(marker)})
    task = asyncio.create_task(
        runner.run(run, workflow(built_environment, WORKFLOWS / "slow.py"), logs)
    )
    pid = int((await logs.wait_for(r"pid=(\d+)")).group(1))
    await logs.wait_for("sleeping")

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert_group_gone(pid)
    assert marker.read_text() == "started\n"
    assert leftovers(socket_dir) == []


async def test_a_workflow_without_app_fails_before_ready_and_long_lines_are_cut(
    built_environment: BuiltEnvironment, runner: ProcessRunner, tmp_path: Path
) -> None:
    source = tmp_path / "no_app.py"
    source.write_text(f"print('x' * {3 * MAX_LINE_BYTES})\nprint('short')\n")
    logs = Logs()

    outcome = await runner.run(invocation({}), workflow(built_environment, source), logs)

    assert outcome.status is RunStatus.FAILED
    assert outcome.error == (
        "workflow process exited with code 2 before it was ready; see the run's logs"
    )
    assert "defines no `app`" in logs.text("stderr")
    stdout = [line for stream, line in logs.lines if stream == "stdout"]
    assert stdout[0].startswith("x" * MAX_LINE_BYTES + " […line cut")
    assert stdout[1:] == ["short"]


async def test_a_workflow_that_never_serves_hits_the_startup_timeout(
    built_environment: BuiltEnvironment, socket_dir: Path, base_env: dict[str, str], tmp_path: Path
) -> None:
    source = tmp_path / "hangs.py"
    source.write_text("import time\ntime.sleep(60)\n")
    runner = ProcessRunner(socket_dir=socket_dir, startup_timeout=0.5, base_env=base_env)
    logs = Logs()

    outcome = await runner.run(invocation({}), workflow(built_environment, source), logs)

    assert outcome.status is RunStatus.FAILED
    assert outcome.error == "the workflow did not start serving within 0.5 s (startup timeout)"


SERVER_THAT_DIES = """
import asyncio, sys
from pathlib import Path
from core.models import Invocation
from dispatch.registry import Workflow
from dispatch.sandbox.process_runner import ProcessRunner

invocation = Invocation.model_validate_json(sys.argv[4])
runner = ProcessRunner(socket_dir=Path(sys.argv[3]), startup_timeout=30, base_env={})
workflow = Workflow("slow", 1, Path(sys.argv[2]), Path(sys.argv[1]))
asyncio.run(runner.run(invocation, workflow, lambda stream, line: print(line, flush=True)))
"""


async def wait_for_exit(pid: int) -> None:
    """Wait until ``pid`` (not our child) has exited: its pidfd becomes readable."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    loop = asyncio.get_running_loop()
    exited = asyncio.Event()
    loop.add_reader(fd, exited.set)
    try:
        async with asyncio.timeout(10):
            await exited.wait()
    finally:
        loop.remove_reader(fd)
        os.close(fd)


async def test_a_workflow_dies_with_the_server_that_started_it(
    built_environment: BuiltEnvironment, socket_dir: Path
) -> None:
    run = invocation({"seconds": 60})
    server = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        SERVER_THAT_DIES,
        str(python_of(built_environment.env)),
        str(WORKFLOWS / "slow.py"),
        str(socket_dir),
        run.model_dump_json(),
        stdout=asyncio.subprocess.PIPE,
        cwd=REPO,
    )
    assert server.stdout is not None
    async with asyncio.timeout(30):
        while not (line := (await server.stdout.readline()).decode()).startswith("pid="):
            assert line, "the server ended before the workflow started"
    workflow_pid = int(line.removeprefix("pid="))

    server.kill()
    await server.communicate()

    await wait_for_exit(workflow_pid)


async def test_a_missing_interpreter_is_a_failed_run(runner: ProcessRunner, tmp_path: Path) -> None:
    missing = Workflow("gone", 1, WORKFLOWS / "slow.py", tmp_path / "no-env" / "bin" / "python")

    outcome = await runner.run(invocation({}), missing, Logs())

    assert outcome.status is RunStatus.FAILED
    assert outcome.error == "could not start the workflow process: No such file or directory"
