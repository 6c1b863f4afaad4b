"""Workers: claim runs, execute them, renew their leases, record how they ended."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from contextlib import AsyncExitStack
from datetime import datetime
from typing import Any

from core.clock import Clock
from core.errors import EnvironmentNotBuilt, NotFound, SecretNotSet, SecretsUnreadable
from core.models import Grant, Invocation, Outcome, RunRecord, WorkflowLimits
from core.ports import BuiltinService, LogSink, Metrics, SecretValues, WorkflowRunner
from core.redaction import InFlightSecrets, Redactor
from core.security import Signer
from core.tracing import TRACE
from dispatch.batching import GroupCommit
from dispatch.events import RunEvents
from dispatch.logs import LogWriter
from dispatch.outbox import ReplyWriter
from dispatch.queue import Completion, RunQueue
from dispatch.registry import WorkflowRegistry
from dispatch.run_environment import resolve_declared_env
from dispatch.settings import RuntimeSettings

logger = logging.getLogger(__name__)

CLAIM_STOP_SECONDS = 5.0
"""At shutdown, how long the claim loop gets to finish a claim in flight before it is cancelled."""

RUN_KEY_MARGIN = 60.0
"""Seconds a run key's signed expiry lies past its run's deadline (clock skew between nodes)."""


class WorkerPool:
    """Executes up to ``runtime.workers`` runs at once on this node."""

    def __init__(
        self,
        settings: RuntimeSettings,
        *,
        worker_id: str,
        runtime_url: str,
        queue: RunQueue,
        registry: WorkflowRegistry,
        runner: WorkflowRunner,
        builtins: Mapping[str, BuiltinService],
        logs: LogWriter,
        events: RunEvents,
        signer: Signer,
        clock: Clock,
        metrics: Metrics,
        replies: ReplyWriter,
        secrets: SecretValues,
        in_flight: InFlightSecrets,
        on_reply: Callable[[], None] = lambda: None,
        on_started: Callable[[RunRecord], None] = lambda _run: None,
    ) -> None:
        self._metrics = metrics
        self._secrets = secrets
        self._in_flight = in_flight
        self._on_started = on_started
        self._replies = replies
        self._on_reply = on_reply
        self._settings = settings
        self._worker_id = worker_id
        self._runtime_url = runtime_url
        self._queue = queue
        self._registry = registry
        self._runner = runner
        self._builtins = builtins
        self._logs = logs
        self._events = events
        self._signer = signer
        self._clock = clock
        self._active: dict[str, asyncio.Task[None]] = {}
        self._reserved = 0
        self._more = True
        """Whether the last claim left runs behind (limits, its window): a batch of ends claims
        in its transaction only then; new work wakes the claim loop instead."""
        self._completions: GroupCommit[Completion, RunRecord | None] = GroupCommit(
            lambda ends: self._complete(ends), name="run-completions"
        )
        self._stopping = False
        self._handback: list[str] = []
        """Runs leased to this worker as it stopped (a batch of ends or an intake claimed them
        meanwhile): handed back unstarted, never left running past the pool's end."""
        self._loops: list[asyncio.Task[None]] = []

    @property
    def active_count(self) -> int:
        return len(self._active)

    @property
    def worker_id(self) -> str:
        return self._worker_id

    def reserve(self) -> bool:
        """Hold a worker for a run about to be claimed in its intake's transaction (``adopt``
        runs it, ``unreserve`` gives the worker back); ``False`` when every worker is busy."""
        if self._stopping or len(self._active) + self._reserved >= self._settings.workers:
            return False
        self._reserved += 1
        return True

    def unreserve(self) -> None:
        self._reserved -= 1
        self._events.work_available.set()

    def adopt(self, run: RunRecord) -> None:
        """Execute ``run``, leased to this worker already (by ``RunQueue.claim_submitted``)."""
        self._reserved -= 1
        self._start_runs([run])

    def stop(self, run_id: str) -> bool:
        """Stop a run executing here that was cancelled (``dispatch/run_control.py``): its task
        is cancelled, so its runner tears its process down; ``False`` if it is not here."""
        task = self._active.get(run_id)
        if task is None:
            return False
        if not task.cancelling():  # once: a second cancel would cut its teardown short
            logger.info("run %s: cancelled; stopping it here", run_id)
            task.cancel()
        return True

    async def _complete(self, ends: list[Completion]) -> list[RunRecord | BaseException | None]:
        """Record ``ends`` and, in the same transaction, claim the next runs for the workers
        they free (DESIGN §4: one commit where a batch can share it)."""
        free = 0
        if self._more and not self._stopping:  # nothing was left to claim: no claim needed
            free = self._settings.workers - len(self._active) - self._reserved + len(ends)
        finished, claimed, more = await self._queue.complete_many(
            self._worker_id, ends, claim=free, busy=self._active.keys()
        )
        if free > 0:
            self._more = more
        self._start_runs(claimed)
        return list(finished)

    def _start_runs(self, claimed: list[RunRecord]) -> None:
        for run in claimed:
            if self._stopping:
                self._handback.append(run.id)
                continue
            self._active[run.id] = asyncio.create_task(self._execute(run), name=f"run:{run.id}")

    async def start(self, stack: AsyncExitStack) -> None:
        self._completions.start()
        self._loops = [
            asyncio.create_task(self._claim_loop(), name="workers:claim"),
            asyncio.create_task(self._lease_loop(), name="workers:leases"),
            asyncio.create_task(self._husk_loop(), name="workers:husks"),
        ]
        stack.push_async_callback(self.aclose)

    async def aclose(self) -> None:
        """Stop claiming; let running runs finish for ``shutdown_grace`` s, hand back the rest."""
        self._stopping = True
        self._events.work_available.set()
        # The claim loop ends by itself once it sees _stopping (the wake-up above): cancelled
        # mid-claim, it would leave the runs it had just leased to wait out their lease.
        claim_loop = self._loops[0]
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CLAIM_STOP_SECONDS):
                await asyncio.wait({claim_loop})
        for loop in self._loops:
            loop.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        unfinished: list[str] = []
        if self._active:
            _, pending = await asyncio.wait(
                self._active.values(), timeout=self._settings.shutdown_grace
            )
            unfinished = [run_id for run_id, task in self._active.items() if task in pending]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        # An end already queued is written even if its run was cancelled waiting for it, and
        # before any release: a run recorded as finished is never handed back to run again.
        await self._completions.aclose()
        unfinished += self._handback
        self._handback = []
        for run_id in unfinished:
            logger.info("run %s: handed back to the queue at shutdown", run_id)
            await self._queue.release(self._worker_id, run_id)

    async def _claim_loop(self) -> None:
        work = self._events.work_available
        while not self._stopping:
            free = self._settings.workers - len(self._active) - self._reserved
            claimed: list[RunRecord] = []
            # Cleared also when every worker is busy: a set event makes ``work.wait()`` below
            # return without yielding, and this loop would spin and starve the event loop until
            # a run finished (which it cannot, starved). A finishing run sets it again.
            work.clear()
            if free > 0:
                try:
                    claimed, self._more = await self._queue.claim_more(
                        self._worker_id, free, self._active.keys()
                    )
                except Exception:
                    logger.exception("claiming runs failed; trying again")
                self._start_runs(claimed)
            if claimed:
                # Claim again at once: runs held back by a limit reached in this claim (a
                # workflow at its limit, a chat's next message) no longer hide the ones behind.
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._settings.poll_interval):
                    await work.wait()

    async def _husk_loop(self) -> None:
        """Fail husks never filled (their /logs and /result waits end); checked a few times per
        ``provision_ttl``, at most every minute."""
        ttl = self._settings.provision_ttl
        while True:
            await asyncio.sleep(min(60.0, ttl / 4))
            try:
                expired = await self._queue.expire_husks(ttl)
            except Exception:
                logger.exception("expiring unfilled husks failed; trying again")
                continue
            for run_id in expired:
                logger.info("run %s: provisioned but never filled: failed", run_id)
                self._events.notify(run_id)

    async def _lease_loop(self) -> None:
        interval = self._settings.lease_seconds / 3
        while True:
            await asyncio.sleep(interval)
            held = list(self._active)
            try:
                kept = await self._queue.renew(self._worker_id, held)
            except Exception:
                logger.exception("renewing leases failed; trying again")
                continue
            for run_id in set(held) - kept:
                task = self._active.get(run_id)
                if task is not None and not task.cancelling():
                    # Lost to another worker, or cancelled (dispatch/run_control.py).
                    logger.warning("run %s: lease lost; stopping it here", run_id)
                    task.cancel()

    async def _execute(self, run: RunRecord) -> None:
        started = time.monotonic()
        # Filled with the run's secret values once they are resolved: every line the run writes
        # is stored redacted, so /logs and the CLI never show a value.
        redactor = Redactor()

        def sink(stream: str, line: str) -> None:
            self._logs.append(run.id, stream, redactor.redact(line))

        lines: list[dict[str, Any]] = []
        finished: RunRecord | None = None
        try:
            sink("system", f"run started: {run.service_id} (attempt {run.attempts})")
            self._on_started(run)
            outcome = await self._invoke(run, sink, redactor)
            TRACE.mark(run.id, "executed")
            if outcome.error:
                outcome = outcome.model_copy(update={"error": redactor.redact(outcome.error)})
            elapsed = (time.monotonic() - started) * 1000
            self._metrics.run_finished(outcome.status.value, elapsed / 1000)
            sink(
                "system",
                f"run {outcome.status.value} in {elapsed:.0f} ms"
                + (f": {outcome.error}" if outcome.error else ""),
            )
            lines = await self._logs.take(run.id)
            TRACE.mark(run.id, "logs.settled")

            def reply(now: datetime) -> dict[str, Any] | None:
                return self._replies.row(run, outcome, now)

            # Batched with the other runs ending meanwhile: one commit for all of them.
            finished = await self._completions.submit(
                Completion(run.id, outcome, reply, lines, started_at=run.started_at)
            )
            if finished is not None:
                self._on_reply()
            else:
                logger.warning(
                    "run %s: finished here but its lease had passed to another worker", run.id
                )
        except asyncio.CancelledError:
            await self._logs.settle(run.id)
            raise
        except Exception:
            logger.exception("run %s: could not record its outcome", run.id)
            self._logs.put_back(lines)  # its completion was rolled back, they were not stored
        finally:
            self._active.pop(run.id, None)
            self._events.notify(run.id, finished)
            # Else its end claimed for the worker it freed, if anything was left to claim (new
            # work wakes the claim loop itself).
            if finished is None:
                self._events.work_available.set()

    async def _invoke(self, run: RunRecord, sink: LogSink, redactor: Redactor) -> Outcome:
        invocation = self._invocation(run)
        builtin = self._builtins.get(run.service_id)
        try:
            if builtin is not None:
                async with asyncio.timeout(invocation.timeout):
                    return await builtin(invocation, sink)
            # A run that names its version (a replay of "same") runs that one, not the current.
            workflow = await self._registry.resolve(run.service_id, run.workflow_version)
            await self._queue.set_version(self._worker_id, run.id, workflow.version)
            root = str(workflow.source_path.parent)
            # A workflow's own timeout may be shorter than runtime.run_timeout, never longer:
            # that is the operator's ceiling.
            timeout = min(workflow.limits.timeout or invocation.timeout, invocation.timeout)
            declared = await resolve_declared_env(
                self._secrets,
                owner_id=run.owner_id,
                service_id=workflow.service_id,
                declared=workflow.declared_env,
            )
            redactor.add(declared.secrets)
            invocation = invocation.model_copy(
                update={
                    "workflow_version": workflow.version,
                    "env": {
                        # Under the runtime's own variables: a secret never overrides them.
                        **declared.env,
                        **invocation.env,
                        "CODEWORDS_API_KEY": self._run_key(run, workflow.limits, timeout),
                        "CODEWORDS_SERVICE_ROOT": root,
                    },
                    "timeout": timeout,
                }
            )
            with self._in_flight.holding(declared.secrets):
                return await self._runner.run(invocation, workflow, sink)
        except TimeoutError:
            return Outcome.failure(f"timed out after {invocation.timeout:g} s", timed_out=True)
        except NotFound:
            return Outcome.failure(
                f"workflow {run.service_id!r} is not registered (or was removed)"
            )
        except (EnvironmentNotBuilt, SecretNotSet, SecretsUnreadable) as exc:
            # Before any process of the run started: nothing to clean up.
            logger.warning("run %s: %s", run.id, exc)
            return Outcome.failure(str(exc))
        except Exception as exc:
            logger.exception("run %s: internal error", run.id)
            return Outcome.failure(
                f"internal error while running the workflow: {type(exc).__name__}"
            )

    def _run_key(self, run: RunRecord, limits: WorkflowLimits, timeout: float) -> str:
        """The run's ``CODEWORDS_API_KEY``: its owner's, while the run runs (the authenticator
        checks), with the grants of the workflow's header; ``network = "internet"`` implies
        ``outbound`` (such a workflow reaches the outside itself anyway). ``expires`` is only a
        backstop: the run's deadline plus a margin for clocks between nodes."""
        grants = set(limits.grants)
        if limits.network == "internet":
            grants.add(Grant.OUTBOUND)
        expires = int(self._clock.now().timestamp() + timeout + RUN_KEY_MARGIN)
        return self._signer.run_key(
            run_id=run.id, owner_id=run.owner_id, expires=expires, grants=grants
        )

    def _invocation(self, run: RunRecord) -> Invocation:
        settings = self._settings
        headers = {
            "X-Request-Id": run.id,
            "X-Correlation-Id": run.correlation_id or run.id,
            "Codewords-Caller-Id": run.caller_id or run.owner_id,
            **(run.context or {}),
        }
        return Invocation(
            run_id=run.id,
            owner_id=run.owner_id,
            service_id=run.service_id,
            workflow_version=None,
            path=run.path,
            method=run.method,
            body=(run.request_body or "").encode(),
            headers=headers,
            env={
                "PORT": "8000",
                "LOGLEVEL": settings.workflow_log_level,
                "CODEWORDS_RUNTIME_URI": self._runtime_url,
                "RUNTIME_URI": self._runtime_url,
            },
            timeout=settings.run_timeout,
            max_response_size=settings.max_response_size,
        )
