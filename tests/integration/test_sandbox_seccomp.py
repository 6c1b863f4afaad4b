"""The runs' seccomp filter for real: denied system calls fail with EPERM in a fresh sandbox and
in a zygote's child, and the workflow stack (uvicorn, threads, subprocesses) still works.

Skipped only where the host cannot make sandboxes at all; CI's machine can.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import replace

import pyseccomp
import pytest

from core.models import RunStatus, WorkflowLimits
from dispatch.sandbox.sandbox_runner import SandboxRunner
from dispatch.sandbox.seccomp import DENIED, NAMESPACE_FLAGS
from tests.runs import (
    HELLO,
    WORKFLOWS,
    BuiltEnvironment,
    Logs,
    invocation,
    workflow,
)

SIGCHLD = 17


def number(name: str) -> int:
    return int(pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, name))


async def make_calls(
    runner: SandboxRunner, built: BuiltEnvironment, calls: list[list[int | str]], network: str
) -> dict[str, object]:
    limits = WorkflowLimits.model_validate({"network": network})
    syscalls = replace(workflow(built, WORKFLOWS / "syscalls.py"), limits=limits)
    logs = Logs()
    outcome = await runner.run(
        invocation({"calls": calls}, run_id=f"req_sys{uuid.uuid4().hex[:12]}", timeout=20),
        syscalls,
        logs,
    )
    assert outcome.status is RunStatus.COMPLETED, f"{outcome.error}\n{logs.text()}"
    answer: dict[str, object] = json.loads(outcome.response_body or b"")
    return answer


@pytest.mark.parametrize("network", ["none", "internet"])
async def test_the_dangerous_system_calls_fail_with_eperm(
    sandbox_runner: SandboxRunner, built_environment: BuiltEnvironment, network: str
) -> None:
    # All arguments 0: harmless where a call is allowed (most then fail with EFAULT or EINVAL,
    # unshare(0) succeeds), so only the filter makes every one of them EPERM.
    calls: list[list[int | str]] = [[name, number(name), 0, 0, 0, 0, 0] for name in DENIED]

    answer = await make_calls(sandbox_runner, built_environment, calls, network)

    assert answer["seccomp"] == "2"  # filtered (0 before: no filter at all)
    assert answer["results"] == dict.fromkeys(DENIED, "EPERM")
    assert answer["works"] == ["thread", "subprocess"]


async def test_clone_makes_no_namespace_and_clone3_is_not_offered(
    sandbox_runner: SandboxRunner, built_environment: BuiltEnvironment
) -> None:
    calls: list[list[int | str]] = [
        [f"clone {flag}", number("clone"), value | SIGCHLD, 0, 0, 0, 0]
        for flag, value in NAMESPACE_FLAGS.items()
    ]
    calls.append(["clone3", number("clone3"), 0, 0])

    answer = await make_calls(sandbox_runner, built_environment, calls, "none")

    assert answer["results"] == {
        **{f"clone {flag}": "EPERM" for flag in NAMESPACE_FLAGS},
        "clone3": "ENOSYS",  # so that libc falls back to clone, which the filter can read
    }
    assert answer["works"] == ["thread", "subprocess"]  # clone without namespaces: allowed


async def test_a_well_behaved_workflow_still_answers(
    sandbox_runner: SandboxRunner, built_environment: BuiltEnvironment
) -> None:
    outcome = await sandbox_runner.run(
        invocation({"name": "Ada"}, run_id=f"req_hello{uuid.uuid4().hex[:12]}"),
        workflow(built_environment, HELLO),
        Logs(),
    )

    assert outcome.status is RunStatus.COMPLETED, outcome.error
    assert json.loads(outcome.response_body or b"") == {"message": "Hello Ada!"}
