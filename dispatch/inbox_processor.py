"""The inbox processor (a ``core.channels.Component``, on worker nodes): events -> run requests.

It leases pending events (``InboxQueue.claim``: one per conversation at a time, in arrival
order), hands each to its trigger's :class:`core.inbox.EventProcessor`, and records the outcomes
of everything that finished meanwhile in one transaction (``GroupCommit`` over
``InboxQueue.finish``). It wakes at once when this node accepted events (``InboxWriter``), when
one of its own events finished (the next of that conversation may go), when a retry falls due,
and every ``poll_interval`` for events other nodes accepted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from contextlib import AsyncExitStack

from core.clock import Clock
from core.inbox import EventProcessor, ProcessingResult, StoredEvent
from core.ports import Metrics
from dispatch.batching import GroupCommit
from dispatch.events import RunEvents
from dispatch.inbox_queue import Finished, InboxQueue
from dispatch.settings import InboxSettings

logger = logging.getLogger(__name__)


class InboxProcessor:
    """Processes this node's share of the inbox, ``concurrency`` events at once at most."""

    def __init__(
        self,
        settings: InboxSettings,
        owner: str,
        queue: InboxQueue,
        processors: Mapping[str, EventProcessor],
        *,
        wake: asyncio.Event,
        clock: Clock,
        run_events: RunEvents,
        metrics: Metrics,
        on_finished: Callable[[str], None] = lambda _event_id: None,
    ) -> None:
        self._settings = settings
        self._owner = owner
        self._queue = queue
        self._processors = dict(processors)
        self._wake = wake
        self._clock = clock
        self._run_events = run_events
        self._metrics = metrics
        self._on_finished = on_finished
        self._in_flight: dict[str, asyncio.Task[None]] = {}
        self._retry_due: float | None = None
        self._finisher: GroupCommit[
            tuple[StoredEvent, ProcessingResult | BaseException], Finished
        ] = GroupCommit(self._finish, name="inbox-finish")
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False

    async def start(self, stack: AsyncExitStack) -> None:
        if not self._processors:
            return
        self._finisher.start()
        self._tasks = [
            asyncio.create_task(self._claim_loop(), name="inbox-claims"),
            asyncio.create_task(self._renew_loop(), name="inbox-leases"),
        ]
        stack.push_async_callback(self.aclose)

    async def aclose(self) -> None:
        """Stop taking events; hand back the ones still being processed (not an attempt)."""
        self._closing = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        processing = list(self._in_flight.values())
        for task in processing:
            task.cancel()
        await asyncio.gather(*processing, return_exceptions=True)
        await self._finisher.aclose()  # what finished before the cancellation is recorded
        unfinished = list(self._in_flight)
        self._in_flight.clear()
        try:
            await self._queue.release(self._owner, unfinished)
        except Exception:
            logger.exception("inbox: handing back %d events failed", len(unfinished))

    @property
    def active_count(self) -> int:
        return len(self._in_flight)

    async def _claim_loop(self) -> None:
        triggers = frozenset(self._processors)
        while True:
            self._wake.clear()
            free = self._settings.concurrency - len(self._in_flight)
            claimed: list[StoredEvent] = []
            if free > 0:
                try:
                    claimed = await self._queue.claim(
                        self._owner, triggers, free, busy=self._in_flight.keys()
                    )
                except Exception:
                    logger.exception("inbox: claiming events failed; trying again")
            self._begin(claimed)
            if claimed and len(claimed) == free:
                await asyncio.sleep(0)  # maybe more: claim again once a slot is free
                if len(self._in_flight) < self._settings.concurrency:
                    continue
            await self._wait(self._settings.poll_interval)

    async def _wait(self, longest: float) -> None:
        timeout = longest
        if self._retry_due is not None:
            timeout = max(0.0, min(timeout, self._retry_due - time.monotonic()))
            if timeout == 0.0:
                self._retry_due = None
                return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._wake.wait()

    def _begin(self, claimed: list[StoredEvent]) -> None:
        for event in claimed:
            self._in_flight[event.id] = asyncio.create_task(
                self._process(event), name=f"inbox:{event.id}"
            )

    async def _process(self, event: StoredEvent) -> None:
        processor = self._processors[event.trigger]
        result: ProcessingResult | BaseException
        try:
            result = await processor.process(event)
        except Exception as exc:  # an attempt that failed: counted, retried later
            result = exc
        finished: Finished | None = None
        try:
            finished = await self._finisher.submit((event, result))
        except Exception as exc:  # its run requests could not be written (nor the mark)
            logger.exception("inbox event %s: recording its outcome failed", event.id)
            try:
                finished = await self._finisher.submit((event, exc))
            except Exception:
                logger.exception("inbox event %s: recording the failure failed too", event.id)
        self._in_flight.pop(event.id, None)
        if finished is None:
            self._wake.set()  # a slot is free, and the conversation's next event may go
            return
        if finished.retry_at is not None:
            due = time.monotonic() + (finished.retry_at - self._clock.now()).total_seconds()
            self._retry_due = due if self._retry_due is None else min(self._retry_due, due)
        for request, submitted in finished.runs:
            if submitted.created:
                self._metrics.run_accepted(request.source.value)
            self._run_events.notify(submitted.id)
        if finished.runs:
            self._run_events.work_available.set()
        self._on_finished(event.id)

    async def _finish(
        self, outcomes: list[tuple[StoredEvent, ProcessingResult | BaseException]]
    ) -> list[Finished | BaseException]:
        """Record ``outcomes`` and, in the same commit, take what their slots and their
        conversations' order now allow (the claim loop need not run for it)."""
        free = self._settings.concurrency - len(self._in_flight) + len(outcomes)
        if self._closing:
            free = 0
        answers, claimed = await self._queue.finish_and_claim(
            self._owner, outcomes, self._processors, free, busy=self._in_flight.keys()
        )
        self._begin(claimed)
        return answers

    async def _renew_loop(self) -> None:
        while True:
            await asyncio.sleep(self._settings.lease_seconds / 3)
            if not self._in_flight:
                continue
            asked = list(self._in_flight)
            try:
                kept = await self._queue.renew(self._owner, asked)
            except Exception:
                logger.exception("inbox: renewing leases failed; trying again")
                continue
            lost = [i for i in asked if i not in kept and i in self._in_flight]
            if lost:  # another node has them now (this one stalled): its result counts
                logger.warning("inbox: lost the leases of %s", ", ".join(sorted(lost)))
