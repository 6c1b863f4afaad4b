"""Where a cold sandboxed run's milliseconds go: the stages of one ``SandboxRunner.run`` of
``bench/workflows/client_greeter.py`` (``examples/hello.py`` importing its declared
``codewords_client``, ``structlog``, ``httpx``; ``--workflow`` for another) forked from the
zygote, sequential and 10 at once, with the fresh-interpreter reference
(``python -c 'import fastapi, uvicorn'``) beside it.

Usage (repository root, as root, bubblewrap installed; replaces its section of bench/RESULTS.md,
``--output FILE`` to write elsewhere)::

    .venv/bin/python -m bench.sandbox_cold --env <built environment dir> [--runs 30]

Stages (each timed around the runner's own call): prepare (run dir, cgroup), relay (runtime API
socket), fork (the zygote forks a keeper), place (keeper and pid 1 into the cgroup, "go"),
ready (pid 1: load the launcher and the workflow, start uvicorn), request, teardown.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dispatch.sandbox.sandbox_runner as sandbox_runner
import dispatch.sandbox.zygote_pool as zygote_pool
from bench.report import RESULTS, code_version, machine_facts, percentile, replace_section, table
from bench.sandbox import BASE_ENV, bench_sandbox, invocation
from core.models import WorkflowLimits
from dispatch.registry import Workflow
from dispatch.sandbox.sandbox_runner import SandboxRunner
from dispatch.sandbox.zygote_pool import ZygotePool

REPO = Path(__file__).resolve().parents[1]
CLIENT_GREETER = Path(__file__).with_name("workflows") / "client_greeter.py"
STAGES = ("prepare", "relay", "fork", "place", "place: cgroup join", "ready", "request", "teardown")

_marks: dict[str, list[float]] = {}
"""stage -> [ms], for sequential runs (the wrappers append)"""


def _timed(stage: str, call: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(call)
    async def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return await call(*args, **kwargs)
        finally:
            _marks.setdefault(stage, []).append((time.perf_counter() - started) * 1000)

    return timed


def _timed_sync(stage: str, call: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(call)
    def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return call(*args, **kwargs)
        finally:
            _marks.setdefault(stage, []).append((time.perf_counter() - started) * 1000)

    return timed


def instrument() -> None:
    """Wrap each stage's call (a benchmark's wrappers: the runner's code is unchanged)."""
    run = sandbox_runner.SandboxedRun
    for owner, name, stage in (
        (sandbox_runner, "relay_runtime_api", "relay"),
        (zygote_pool.Zygote, "fork", "fork"),
        (run, "_place", "place"),
        (sandbox_runner, "wait_until_ready", "ready"),
        (sandbox_runner, "send_request", "request"),
        (run, "_end", "teardown"),
    ):
        setattr(owner, name, _timed(stage, getattr(owner, name)))
    for name, stage in (("_prepare", "prepare"), ("_join", "place: cgroup join")):
        setattr(sandbox_runner, name, _timed_sync(stage, getattr(sandbox_runner, name)))


async def one(runner: SandboxRunner, workflow: Workflow) -> float:
    started = time.perf_counter()
    outcome = await runner.run(invocation({"name": "Ada"}), workflow, lambda _s, _l: None)
    if outcome.status.value != "completed":
        raise RuntimeError(outcome.error)
    return (time.perf_counter() - started) * 1000


def fresh_interpreter(python: Path, runs: int) -> float:
    """p50 ms of ``python -c 'import fastapi, uvicorn'`` (the reference a zygote avoids)."""
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([str(python), "-c", "import fastapi, uvicorn"], check=True)
        timings.append((time.perf_counter() - started) * 1000)
    return statistics.median(timings)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--env", type=Path, required=True)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--workflow", type=Path, default=CLIENT_GREETER)
    parser.add_argument("--output", type=Path, default=RESULTS, help="the results file to update")
    args = parser.parse_args()
    python = args.env / "bin" / "python"
    settings = bench_sandbox("cold")
    runs_dir, cgroups = settings.runs_dir, settings.cgroups
    instrument()
    pool = ZygotePool(settings, runs_dir.with_name(runs_dir.name + "-z"))
    runner = SandboxRunner(settings, base_env=BASE_ENV, zygotes=pool)
    workflow = Workflow("hello", 1, args.workflow, python, WorkflowLimits(network="none"))
    await one(runner, workflow)  # starts the zygote: not a cold run's cost
    _marks.clear()
    totals = [await one(runner, workflow) for _ in range(args.runs)]
    stages = {stage: list(_marks.get(stage, [0.0])) for stage in STAGES}
    started = time.perf_counter()
    concurrent = await asyncio.gather(*(one(runner, workflow) for _ in range(10)))
    wall = (time.perf_counter() - started) * 1000
    await runner.close()
    await pool.close()
    cgroups.release()
    runs_dir.rmdir()
    fresh = fresh_interpreter(python, 10)
    rows = [
        (stage, f"{statistics.median(values):.1f}", f"{percentile(values, 95):.1f}")
        for stage, values in stages.items()
    ]
    rows.append(
        (
            f"**whole run** (N={args.runs})",
            f"{statistics.median(totals):.1f}",
            f"{percentile(totals, 95):.1f}",
        )
    )
    header = (f"stage ({args.workflow.name}, zygote, network none)", "p50 ms", "p95 ms")
    facts = ", ".join(f"{name} {value}" for name, value in machine_facts())
    section = "\n".join(
        [
            "## Sandbox: cold zygote run by stage (bench.sandbox_cold)",
            "",
            f"`python -m bench.sandbox_cold`, {code_version()}; {facts}. Analysis: the",
            '"where a cold zygote run\'s time goes" section.',
            "",
            *table(header, rows, right=1),
            "",
            f"10 at once: all done in {wall:.0f} ms (p50 {statistics.median(concurrent):.0f} ms, "
            f"max {max(concurrent):.0f} ms). Fresh interpreter, "
            f"`python -c 'import fastapi, uvicorn'`, p50: {fresh:.0f} ms.",
        ]
    )
    replace_section(section, args.output)
    print(section)


if __name__ == "__main__":
    asyncio.run(main())
