"""Warm reuse of a sandboxed workflow process: opt-in, one key, an idle TTL (DESIGN §5 speed).

A completed run that broke no limit and whose output fence arrived parks its process (sandbox,
cgroup, run directory, relay) under its :class:`WarmKey`; the next run of that key sends its
request to the same socket, with its own run-scoped key in ``X-Switchboard-Run-Env``. What is
reused, when it is torn down and what a workflow accepts by opting in: README "Warm reuse".
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import secrets
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.models import Invocation, Outcome, RunStatus, WorkflowLimits
from core.ports import LogSink, ResolvedWorkflow
from dispatch.sandbox.cgroups import RunCgroup, limit_error
from dispatch.sandbox.serving import DRAIN_SECONDS, RunProcess, send_request, serve

logger = logging.getLogger(__name__)

WARM_ENV = "SWITCHBOARD_WARM"
"""Set to ``1`` in a warm-capable process's environment: the launcher then reads the headers."""
RUN_ENV_HEADER = "X-Switchboard-Run-Env"
FENCE_HEADER = "X-Switchboard-Fence"
PER_RUN_ENV = frozenset({"CODEWORDS_API_KEY"})
"""What differs between runs of one key: sent with each request, left out of the key."""


@dataclass(frozen=True, slots=True)
class WarmKey:
    """What a run must share with a parked process to be served by it."""

    service_id: str
    version: int
    source: Path
    python: Path
    """the environment's interpreter: its directory is named after the lock hash"""
    owner_id: str
    limits: WorkflowLimits
    env_digest: str
    """sha256 of the process's environment without :data:`PER_RUN_ENV`"""


def warm_key(invocation: Invocation, workflow: ResolvedWorkflow, env: Mapping[str, str]) -> WarmKey:
    stable = sorted((name, value) for name, value in env.items() if name not in PER_RUN_ENV)
    return WarmKey(
        service_id=workflow.service_id,
        version=workflow.version,
        source=workflow.source_path,
        python=workflow.python,
        owner_id=invocation.owner_id,
        limits=workflow.limits,
        env_digest=hashlib.sha256(json.dumps(stable).encode()).hexdigest(),
    )


class LogRoute:
    """An ``on_log`` sink whose target is the run the process serves now, switched per run."""

    def __init__(self, service_id: str) -> None:
        self._service_id = service_id
        self._sink: LogSink | None = None
        self._fence: str | None = None
        self._fenced: dict[str, asyncio.Event] = {}

    def begin(self, sink: LogSink) -> str:
        """Send lines to ``sink`` from now on; returns the fence the request must carry."""
        self._sink = sink
        self._fence = secrets.token_hex(16)
        self._fenced = {"stdout": asyncio.Event(), "stderr": asyncio.Event()}
        return self._fence

    async def end(self, timeout: float) -> bool:
        """Wait for the fence on both streams, then stop sending lines to the run's sink.
        False if a fence did not arrive in time (the process must not be reused)."""
        try:
            async with asyncio.timeout(timeout):
                for fenced in self._fenced.values():
                    await fenced.wait()
        except TimeoutError:
            return False
        self._sink = None
        return True

    def __call__(self, stream: str, line: str) -> None:
        fence = self._fence
        if fence is not None and line.endswith(fence) and stream in self._fenced:
            self._fenced[stream].set()
            line = line[: -len(fence)]  # what a workflow printed without a newline before it
            if not line:
                return
        sink = self._sink
        if sink is not None:
            sink(stream, line)
        else:
            # Not the line itself: it is no run's (so no run's redaction applies) and the
            # process's environment candidates its owner's secrets.
            logger.debug(
                "warm process of %s, between runs, wrote a %s line of %d characters (not kept)",
                self._service_id,
                stream,
                len(line),
            )


class WarmProcess:
    """One kept process and what serving a further run needs of it."""

    def __init__(
        self,
        key: WarmKey,
        *,
        first_run: str,
        process: RunProcess,
        cgroup: RunCgroup,
        socket_path: Path,
        route: LogRoute,
    ) -> None:
        self.key = key
        self.first_run = first_run
        self.process = process
        self.cgroup = cgroup
        self.socket_path = socket_path
        self.route = route
        self.retired = asyncio.Event()
        self.idle: asyncio.TimerHandle | None = None
        self.runs = 1
        self.task: asyncio.Task[Outcome] | None = None
        """the run that started it, held at its end: done once the process is torn down"""
        # One waiter for the exit (a zygote child's wait reads a pipe, one reader at a time).
        self.exited: asyncio.Task[int] = asyncio.create_task(process.wait())

    @property
    def alive(self) -> bool:
        return not self.exited.done() and not self.retired.is_set()

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    async def wait(self) -> int:
        """The exit code, once the process exits (for ``send_request``)."""
        return await asyncio.shield(self.exited)

    def kill(self) -> None:
        self.process.kill()

    async def serve(self, invocation: Invocation) -> Outcome:
        """Send one run's request, watching its timeout and the process's limits."""

        async def request() -> Outcome:
            return await send_request(invocation, self, self.socket_path)

        return await serve(invocation, request, (self.cgroup, self.key.limits))


Start = Callable[[Invocation, LogSink, "WarmCandidate"], Coroutine[Any, Any, Outcome]]
"""Starts a run as the sandbox does; its end hands the process to :meth:`WarmPool.park`."""


class WarmPool:
    """Warm processes by key: at most ``cap`` kept, each torn down after ``idle_ttl`` s idle.

    Every kept process lives inside a task this pool owns (the run that started it, held at its
    end: ``sandbox_runner.py`` ``SandboxedRun._end``); retiring the process lets that task go on to
    the usual teardown. :meth:`close` retires all and waits for those tasks.
    """

    def __init__(self, *, idle_ttl: float, cap: int) -> None:
        self._idle_ttl = idle_ttl
        self._cap = cap
        self._kept: list[WarmProcess] = []
        """every kept process, least recently used first"""
        self._busy: set[WarmProcess] = set()
        self._tasks: set[asyncio.Task[Outcome]] = set()
        self._closing = False

    def __len__(self) -> int:
        return len(self._kept)

    async def run(
        self, invocation: Invocation, key: WarmKey, on_log: LogSink, start: Start
    ) -> Outcome:
        """Serve the run with a parked process of ``key``, or start one that may be kept."""
        warm = self._checkout(key)
        if warm is not None:
            return await self._reuse(warm, invocation, on_log)
        return await self._start(invocation, key, on_log, start)

    async def wait_until_empty(self) -> None:
        """Return once no warm process is left and every one kept so far is torn down."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    async def close(self) -> None:
        """Tear down every idle warm process now, busy ones when their run ends; wait for all."""
        self._closing = True
        for warm in [w for w in self._kept if w not in self._busy]:
            self._retire(warm)
        await self.wait_until_empty()

    def _checkout(self, key: WarmKey) -> WarmProcess | None:
        for warm in reversed(self._kept):
            if warm.key == key and warm not in self._busy and warm.alive:
                if warm.idle is not None:
                    warm.idle.cancel()
                    warm.idle = None
                self._busy.add(warm)
                self._kept.remove(warm)
                self._kept.append(warm)
                return warm
        return None

    async def _reuse(self, warm: WarmProcess, invocation: Invocation, on_log: LogSink) -> Outcome:
        warm.runs += 1
        logger.info(
            "run %s: served by the warm process of run %s (%s v%s, run %d on it)",
            invocation.run_id, warm.first_run, warm.key.service_id, warm.key.version, warm.runs,
        )  # fmt: skip
        fence = warm.route.begin(on_log)
        per_run = {name: value for name, value in invocation.env.items() if name in PER_RUN_ENV}
        headers = {
            **invocation.headers,
            FENCE_HEADER: fence,
            RUN_ENV_HEADER: json.dumps(per_run),
        }
        try:
            outcome = await warm.serve(invocation.model_copy(update={"headers": headers}))
        except BaseException:
            await self._after_use(warm, None)
            raise
        await self._after_use(warm, outcome)
        return outcome

    async def _after_use(self, warm: WarmProcess, outcome: Outcome | None) -> None:
        """Park ``warm`` again, or end it as any run that ended so ends: nothing of it is left
        when the run returns."""
        kept = False
        try:
            kept = await self._keep(warm, outcome)
        finally:
            self._busy.discard(warm)  # only now: no other run may take it before the decision
            if not kept:
                self._retire(warm)
        if not kept and warm.task is not None:
            await asyncio.wait({warm.task})

    async def _keep(self, warm: WarmProcess, outcome: Outcome | None) -> bool:
        """Park ``warm`` after a run if that run leaves it fit for the next one."""
        if outcome is None or outcome.status is not RunStatus.COMPLETED or not warm.alive:
            return False
        if limit_error(warm.cgroup.events(), warm.key.limits) is not None:
            return False
        if not await warm.route.end(DRAIN_SECONDS):
            logger.warning(
                "warm process of run %s: its output fence did not arrive; not reused",
                warm.first_run,
            )
            return False
        if self._closing or not warm.alive:
            return False
        warm.idle = asyncio.get_running_loop().call_later(self._idle_ttl, self._expire, warm)
        return True

    def _expire(self, warm: WarmProcess) -> None:
        logger.info(
            "warm process of run %s (%s v%s): idle for %g s, torn down",
            warm.first_run, warm.key.service_id, warm.key.version, self._idle_ttl,
        )  # fmt: skip
        self._retire(warm)

    def _retire(self, warm: WarmProcess) -> None:
        if warm.idle is not None:
            warm.idle.cancel()
            warm.idle = None
        with contextlib.suppress(ValueError):
            self._kept.remove(warm)
        warm.retired.set()

    def _admit(self, warm: WarmProcess) -> bool:
        """Count a newly parked process in, making room by retiring the LRU idle ones."""
        if self._closing or self._cap <= 0:
            return False
        idle = [w for w in self._kept if w not in self._busy]
        while len(self._kept) >= self._cap and idle:
            self._retire(idle.pop(0))
        if len(self._kept) >= self._cap:
            return False
        self._kept.append(warm)
        return True

    async def _start(
        self, invocation: Invocation, key: WarmKey, on_log: LogSink, start: Start
    ) -> Outcome:
        route = LogRoute(key.service_id)
        fence = route.begin(on_log)
        parked = asyncio.get_running_loop().create_future()
        candidate = WarmCandidate(key, route, invocation.run_id, parked)
        first = invocation.model_copy(
            update={"headers": {**invocation.headers, FENCE_HEADER: fence}}
        )
        task = asyncio.create_task(start(first, route, candidate), name=f"warm:{invocation.run_id}")
        candidate.task = task
        self._tasks.add(task)

        def forget(task: asyncio.Task[Outcome]) -> None:
            self._tasks.discard(task)
            # Once parked, nobody awaits the task: an error in the teardown is only logged.
            parked = candidate.parked.done() and not candidate.parked.cancelled()
            if parked and not task.cancelled() and task.exception() is not None:
                logger.error(
                    "the warm process of run %s ended with an error",
                    invocation.run_id,
                    exc_info=task.exception(),
                )

        task.add_done_callback(forget)
        try:
            done, _ = await asyncio.wait(
                {task, candidate.parked}, return_when=asyncio.FIRST_COMPLETED
            )
        except asyncio.CancelledError:
            candidate.abandoned = True
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            raise
        if candidate.parked in done:
            return candidate.parked.result()
        candidate.parked.cancel()
        return task.result()

    async def park(
        self,
        candidate: WarmCandidate,
        outcome: Outcome | None,
        process: RunProcess,
        cgroup: RunCgroup,
        socket_path: Path,
    ) -> None:
        """Called by a warm-capable run's end, before its teardown: keep the process if the run
        left it fit for the next one, and return only once it is retired."""
        if candidate.abandoned or outcome is None or process.returncode is not None:
            return
        key, run_id = candidate.key, candidate.run_id
        warm = WarmProcess(
            key,
            first_run=run_id,
            process=process,
            cgroup=cgroup,
            socket_path=socket_path,
            route=candidate.route,
        )
        warm.task = candidate.task
        try:
            if not await self._keep(warm, outcome) or not self._admit(warm):
                return
            if candidate.parked.done():  # the caller went away meanwhile
                return
            logger.info("run %s: its process is kept warm for %s", run_id, key.service_id)
            candidate.parked.set_result(outcome)
            warm.exited.add_done_callback(lambda _: self._retire(warm))
            await warm.retired.wait()
        finally:
            self._retire(warm)  # also when cancelled: it must not keep a place in the pool
            warm.exited.cancel()
            await asyncio.gather(warm.exited, return_exceptions=True)


@dataclass(eq=False)
class WarmCandidate:
    """A run started so that its process may be kept: what :meth:`WarmPool.park` needs of it."""

    key: WarmKey
    route: LogRoute
    run_id: str
    parked: asyncio.Future[Outcome]
    """set when the process is kept: the run's outcome, for its caller"""
    task: asyncio.Task[Outcome] | None = None
    abandoned: bool = False
    """the run's caller went away: never park"""
