"""Cold-start cost of the workflow runners: plain process vs bubblewrap sandbox, with and without
the zygote.

Usage (from the repository root, as root, with bubblewrap and slirp4netns installed)::

    .venv/bin/python -m bench.sandbox --env <built environment dir> [--runs 30]

``--env`` is an environment built for the test workflows (``tests/runs.py`` builds one under
``$SWITCHBOARD_TEST_CACHE/envs/<hash>``). For each runner it times ``--runs`` sequential cold
runs of ``examples/hello.py`` (fresh process, one request, teardown: the cold figures include the
teardown, the "to response" ones stop when the workflow's answer arrives), then 10 concurrent cold
starts, and samples the memory of an idle sandboxed run (``tests/workflows/slow.py`` sleeping)
from its cgroup, with and without the zygote; and the warm request overhead: one request over the
Unix socket to an already serving workflow; and warm reuse: ``runner.run`` end to end for runs of
a ``warm = true`` workflow served by the process an earlier run of the same owner left
(``--warm-only`` measures just that). Prints Markdown tables for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import contextvars
import json
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Literal

import httpx

import dispatch.sandbox.process_runner
import dispatch.sandbox.sandbox_runner
import dispatch.sandbox.warm_pool
from core.models import Invocation, Outcome, WorkflowLimits
from dispatch.registry import Workflow
from dispatch.sandbox.bwrap import SandboxSettings, probe_sandbox
from dispatch.sandbox.cgroups import CgroupLayout, detect_cgroups
from dispatch.sandbox.process_runner import LAUNCHER, ProcessRunner
from dispatch.sandbox.sandbox_runner import SandboxRunner
from dispatch.sandbox.warm_pool import WarmPool
from dispatch.sandbox.zygote_pool import ZygotePool

REPO = Path(__file__).resolve().parents[1]
HELLO = REPO / "examples" / "hello.py"
SLOW = REPO / "tests" / "workflows" / "slow.py"
Network = Literal["none", "internet"]
BASE_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}


def invocation(body: object, timeout: float = 60) -> Invocation:
    run_id = f"req_bench{uuid.uuid4().hex[:16]}"
    return Invocation(
        run_id=run_id,
        owner_id="bench",
        service_id="hello",
        workflow_version=1,
        path="",
        method="POST",
        body=json.dumps(body).encode(),
        headers={"X-Request-Id": run_id},
        env={"CODEWORDS_API_KEY": "bench-key", "CODEWORDS_RUNTIME_URI": "http://127.0.0.1:9"},
        timeout=timeout,
    )


def bench_sandbox(name: str) -> SandboxSettings:
    """Sandboxes as uid 65534 in a runs dir and cgroups named after ``name`` and of their own
    (release the cgroups, remove the dir when done); exits where this host cannot make any."""
    runs_dir = Path(tempfile.gettempdir()) / f"sb-{name}-{uuid.uuid4().hex[:8]}"
    problem = probe_sandbox(65534, runs_dir)
    cgroups = detect_cgroups(f"{name}-{uuid.uuid4().hex[:8]}") if problem is None else problem
    if isinstance(cgroups, str):
        raise SystemExit(f"no sandbox here: {cgroups}")
    return SandboxSettings(
        uid=65534,
        runs_dir=runs_dir,
        runtime_address=("127.0.0.1", 8000),
        startup_timeout=30,
        cgroups=cgroups,
    )


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


_answered: contextvars.ContextVar[list[float]] = contextvars.ContextVar("answered")


def _timed(send: Callable[..., Awaitable[Outcome]]) -> Callable[..., Awaitable[Outcome]]:
    """``send_request`` that notes when the workflow's response arrived (before the teardown)."""

    async def send_request(*args: Any, **kwargs: Any) -> Outcome:
        outcome = await send(*args, **kwargs)
        with contextlib.suppress(LookupError):
            _answered.get().append(time.perf_counter())
        return outcome

    return send_request


_SEND = "send_request"  # timed where each runner calls it
for _module in (
    dispatch.sandbox.process_runner,
    dispatch.sandbox.sandbox_runner,
    dispatch.sandbox.warm_pool,
):
    setattr(_module, _SEND, _timed(getattr(_module, _SEND)))


async def cold(runner: ProcessRunner | SandboxRunner, workflow: Workflow) -> tuple[float, float]:
    """ms of the whole run (teardown included) and ms from its start to the workflow's answer."""
    answered: list[float] = []
    _answered.set(answered)
    started = time.perf_counter()
    outcome = await runner.run(invocation({"name": "Ada"}), workflow, lambda _s, _l: None)
    ended = time.perf_counter()
    if outcome.status.value != "completed":
        raise RuntimeError(f"run failed: {outcome.error}")
    return (ended - started) * 1000, (answered[0] - started) * 1000


async def measure(
    name: str, runner: ProcessRunner | SandboxRunner, workflow: Workflow, runs: int
) -> str:
    await cold(runner, workflow)  # page cache warm-up, not measured
    sequential = [await cold(runner, workflow) for _ in range(runs)]
    concurrent = await asyncio.gather(*(cold(runner, workflow) for _ in range(10)))
    whole = [total for total, _ in sequential]
    answer = [to_response for _, to_response in sequential]
    together = [total for total, _ in concurrent]
    together_answer = [to_response for _, to_response in concurrent]
    return (
        f"| {name} | {runs} | {statistics.median(whole):.0f} | "
        f"{percentile(whole, 0.95):.0f} | {statistics.median(answer):.0f} | "
        f"{statistics.median(together):.0f} | {max(together):.0f} | "
        f"{statistics.median(together_answer):.0f} |"
    )


async def idle_memory(runner: SandboxRunner, workflow: Workflow, cgroups: CgroupLayout) -> int:
    """Bytes charged to a sandboxed run's cgroup while its workflow sleeps."""
    sleeping = asyncio.Event()
    run = invocation({"seconds": 5})

    def on_log(_stream: str, line: str) -> None:
        if line == "sleeping":
            sleeping.set()

    task = asyncio.create_task(runner.run(run, workflow, on_log))
    await sleeping.wait()
    await asyncio.sleep(0.5)
    cgroup = cgroups.run_cgroup(run.run_id)
    memory = next(d for d in cgroup.directories if "memory" in str(d) or cgroups.version == 2)
    usage_file = "memory.current" if cgroups.version == 2 else "memory.usage_in_bytes"
    usage = int((memory / usage_file).read_text())
    await task
    return usage


async def warm_overhead(python: Path, requests: int = 200) -> float:
    """p50 ms of one request to a workflow that already serves (what a warm run costs)."""
    with tempfile.TemporaryDirectory() as directory:
        socket_path = f"{directory}/hello.sock"
        ready_read, ready_write = os.pipe()
        process = await asyncio.create_subprocess_exec(
            str(python), str(LAUNCHER), str(HELLO), socket_path, str(ready_write), str(os.getpid()),
            env=BASE_ENV, pass_fds=(ready_write,), stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        os.close(ready_write)
        await asyncio.to_thread(os.read, ready_read, 16)
        os.close(ready_read)
        transport = httpx.AsyncHTTPTransport(uds=socket_path)
        timings = []
        async with httpx.AsyncClient(transport=transport, base_url="http://workflow") as client:
            for _ in range(requests):
                started = time.perf_counter()
                response = await client.post("/", json={"name": "Ada"})
                response.raise_for_status()
                timings.append((time.perf_counter() - started) * 1000)
        process.kill()
        await process.wait()
    return statistics.median(timings)


async def warm_reuse(
    settings: SandboxSettings, zygotes: ZygotePool | None, python: Path, network: Network, runs: int
) -> str:
    """p50 / p95 ms of whole runs (``runner.run``) served by a kept warm process."""
    pool = WarmPool(idle_ttl=600, cap=1)
    runner = SandboxRunner(settings, base_env=BASE_ENV, zygotes=zygotes, warm=pool)
    workflow = Workflow("hello", 1, HELLO, python, WorkflowLimits(network=network, warm=True))
    await cold(runner, workflow)  # the run whose process is kept
    timings = [(await cold(runner, workflow))[0] for _ in range(runs)]
    if len(pool) != 1:
        raise RuntimeError("the warm process was not reused")
    await runner.close()
    return f"{statistics.median(timings):.1f} / {percentile(timings, 0.95):.1f}"


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--env", type=Path, required=True)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--warm-only", action="store_true", help="only the warm reuse rows")
    args = parser.parse_args()
    python = args.env / "bin" / "python"
    settings = bench_sandbox("bench")
    runs_dir, cgroups = settings.runs_dir, settings.cgroups
    pool = ZygotePool(settings, runs_dir.with_name(runs_dir.name + "-z"))
    warm_rows = [
        f"| {label}, network {network} | {args.runs} | "
        f"{await warm_reuse(settings, zygotes, python, network, args.runs)} |"
        for zygotes, label in ((None, "bwrap"), (pool, "bwrap + zygote"))
        for network in ("none", "internet")
    ]
    warm_table = (
        "\nWarm reuse (hello.py with warm = true, the same owner; whole `runner.run`):\n\n"
        "| runner | N | p50 / p95 ms |\n|---|--:|--:|\n" + "\n".join(warm_rows)
    )
    if args.warm_only:
        await pool.close()
        cgroups.release()
        runs_dir.rmdir()
        print(warm_table)
        return
    rows = []
    with tempfile.TemporaryDirectory() as sockets:
        plain = ProcessRunner(socket_dir=Path(sockets), startup_timeout=30, base_env=BASE_ENV)
        rows.append(await measure("process", plain, Workflow("hello", 1, HELLO, python), args.runs))
    idle: dict[str, int] = {}
    for zygotes, label in ((None, "bwrap"), (pool, "bwrap + zygote")):
        for network in ("none", "internet"):
            sandbox = SandboxRunner(settings, base_env=BASE_ENV, zygotes=zygotes)
            workflow = Workflow("hello", 1, HELLO, python, WorkflowLimits(network=network))
            rows.append(await measure(f"{label}, network {network}", sandbox, workflow, args.runs))
            await sandbox.close()
        idle[label] = await idle_memory(
            SandboxRunner(settings, base_env=BASE_ENV, zygotes=zygotes),
            Workflow("slow", 1, SLOW, python, WorkflowLimits(network="none")),
            cgroups,
        )
    await pool.close()
    warm = await warm_overhead(python)
    cgroups.release()
    runs_dir.rmdir()
    print(
        "| runner | N | cold p50 ms | cold p95 ms | cold p50 to response ms "
        "| 10 concurrent p50 ms | 10 concurrent max ms | 10 concurrent p50 to response ms |"
    )
    print("|---|--:|--:|--:|--:|--:|--:|--:|")
    print("\n".join(rows))
    for label, usage in idle.items():
        print(
            f"\nIdle run ({label}, slow.py sleeping), its cgroup's memory: {usage / 2**20:.1f} MiB"
        )
    print(f"\nWarm request over the Unix socket (hello.py serving), p50: {warm:.2f} ms")
    print(warm_table)


if __name__ == "__main__":
    asyncio.run(main())
