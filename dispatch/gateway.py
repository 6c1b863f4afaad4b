"""The queue as intakes see it (implements ``core.ports.RunGateway``)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack
from datetime import datetime
from typing import Protocol

from core.db import Database
from core.inbox import AcceptedEvent, ArrivingEvent
from core.models import LogEntry, RunRecord, RunRequest, SubmittedRun
from core.ports import BuiltinService, Metrics
from core.tracing import TRACE
from dispatch.batching import GroupCommit
from dispatch.events import RunEvents
from dispatch.intake import ClaimedHere, IntakeItem, IntakeWriter, LocalRun, NewHusk
from dispatch.logs import read_logs
from dispatch.queue import RunQueue
from dispatch.registry import WorkflowRegistry


class LocalWorkers(Protocol):
    """This node's worker pool, as the gateway hands it synchronous runs (``WorkerPool``)."""

    @property
    def worker_id(self) -> str: ...

    def reserve(self) -> bool: ...

    def unreserve(self) -> None: ...

    def adopt(self, run: RunRecord) -> None: ...


class QueueGateway:
    """Group-committed intake, reads, and waits that wake at once on this node and re-check the
    database every ``poll_interval`` for changes made by other nodes."""

    def __init__(
        self,
        database: Database,
        intake: IntakeWriter,
        queue: RunQueue,
        registry: WorkflowRegistry,
        builtins: Mapping[str, BuiltinService],
        events: RunEvents,
        metrics: Metrics,
        *,
        poll_interval: float,
    ) -> None:
        self._metrics = metrics
        self._db = database
        self._queue = queue
        self._registry = registry
        self._builtins = builtins
        self._events = events
        self._poll = poll_interval
        # Runs and inbox events that arrive together share one transaction (one fsync).
        self._intake: GroupCommit[
            IntakeItem | ArrivingEvent | LocalRun, SubmittedRun | str | AcceptedEvent | ClaimedHere
        ]
        self._intake = GroupCommit(intake.write_batch, name="run-intake")
        self._local: LocalWorkers | None = None
        self._adopted: dict[str, asyncio.Future[RunRecord | None]] = {}

    async def start(self, stack: AsyncExitStack) -> None:
        self._intake.start()
        stack.push_async_callback(self.aclose)

    async def aclose(self) -> None:
        await self._intake.aclose()

    def serve_locally(self, workers: LocalWorkers | None) -> None:
        """Hand synchronous runs straight to ``workers`` (this node's pool; ``None``: stop)."""
        self._local = workers

    async def submit(self, request: RunRequest, *, waited: bool = False) -> SubmittedRun:
        if request.run_id is not None:
            TRACE.mark(request.run_id, "intake.queued")
        workers = self._local if waited else None
        if workers is not None and workers.reserve():
            committed = self._intake.submit_nowait(LocalRun(request, workers.worker_id))
            # Adopted when committed, even if this caller has gone: a run leased to this node
            # and left unexecuted would wait out its lease.
            committed.add_done_callback(lambda done: self._adopt(workers, done))
            result = await asyncio.shield(committed)
        else:
            result = await self._intake.submit(request)
        submitted = result.submitted if isinstance(result, ClaimedHere) else result
        if not isinstance(submitted, SubmittedRun):
            raise TypeError("intake returned a husk id for a run request")
        TRACE.mark(submitted.id, "intake.committed")
        if submitted.created:
            self._metrics.run_accepted(request.source.value)
        self._events.notify(submitted.id)
        if not isinstance(result, ClaimedHere):  # else its worker has it already
            self._events.work_available.set()
        return submitted

    def _adopt(
        self,
        workers: LocalWorkers,
        done: asyncio.Future[SubmittedRun | str | AcceptedEvent | ClaimedHere],
    ) -> None:
        result = None if done.cancelled() or done.exception() is not None else done.result()
        if not isinstance(result, ClaimedHere):  # queued as usual (a limit, a duplicate), failed
            workers.unreserve()
            return
        run_id = result.run.id
        change = self._events.subscribe(run_id)  # before the run can end: its end is not missed
        self._adopted[run_id] = change

        def forget(_: object) -> None:  # its caller left before waiting: nobody will pop it
            if self._adopted.get(run_id) is change:
                del self._adopted[run_id]

        change.add_done_callback(forget)
        workers.adopt(result.run)

    async def accept(self, event: ArrivingEvent) -> AcceptedEvent:
        """``core.inbox.Inbox.accept``: the event stored in the intake group commit."""
        accepted = await self._intake.submit(event)
        if not isinstance(accepted, AcceptedEvent):
            raise TypeError("intake returned a run for an inbox event")
        return accepted

    async def provision(
        self, owner_id: str, caller_id: str | None, run_id: str | None = None
    ) -> str:
        husk = await self._intake.submit(
            NewHusk(owner_id=owner_id, caller_id=caller_id, run_id=run_id)
        )
        if not isinstance(husk, str):
            raise TypeError("intake returned a run record for a husk")
        return husk

    async def get(self, run_id: str) -> RunRecord | None:
        return await self._queue.get(run_id)

    async def wait_until_finished(self, run_id: str, timeout: float) -> RunRecord | None:
        deadline = time.monotonic() + timeout
        # A run this node took at its intake: subscribed then, its worker hands over its end.
        change = self._adopted.pop(run_id, None)
        while True:
            if change is None:
                change = self._events.subscribe(run_id)
                record = await self._queue.get(run_id)
                remaining = deadline - time.monotonic()
                if record is None or record.finished or remaining <= 0:
                    self._events.unsubscribe(run_id, change)
                    return record
            remaining = max(0.0, deadline - time.monotonic())
            ended = await self._events.wait(run_id, change, min(remaining, self._poll))
            change = None
            if ended is not None and ended.id == run_id and ended.finished:
                TRACE.mark(run_id, "waiter.woken")
                return ended

    async def follow_logs(
        self, run_id: str, *, after_time: datetime | None = None, follow: bool = True
    ) -> AsyncIterator[list[LogEntry]]:
        cursor = 0
        change: asyncio.Future[RunRecord | None] | None = None
        try:
            while True:
                change = self._events.subscribe(run_id)
                entries = await read_logs(self._db, run_id, after_id=cursor, after_time=after_time)
                if entries:
                    self._events.unsubscribe(run_id, change)
                    cursor = entries[-1].id
                    yield entries
                    continue
                record = await self._queue.get(run_id)
                if not follow or record is None or record.finished:
                    self._events.unsubscribe(run_id, change)
                    # Lines are stored before a run is marked finished: one last read settles it.
                    last = await read_logs(self._db, run_id, after_id=cursor, after_time=after_time)
                    if last:
                        yield last
                    return
                await self._events.wait(run_id, change, self._poll)
        finally:  # a follower cancelled mid-read (its client left) leaves no waiter behind
            if change is not None:
                self._events.unsubscribe(run_id, change)

    async def has_service(self, service_id: str) -> bool:
        return service_id in self._builtins or await self._registry.exists(service_id)
