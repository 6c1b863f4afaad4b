"""One "node" of the inbox on a real database, built from the real parts (no web server).

``InboxNode`` wires what ``switchboard.services`` wires for the inbox: the intake group commit
with the inbox writer in it, the store, the processor's queue; ``processor()`` builds a processor
as a worker node starts it. Tests pass their own ``EventProcessor`` (a fake of a channel).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from core.clock import Clock
from core.db import Database
from core.inbox import (
    AcceptedEvent,
    ArrivingEvent,
    EventProcessor,
    EventStatus,
    Ignored,
    ProcessingResult,
    StoredEvent,
)
from core.models import RunRequest, Source, SubmittedRun
from core.ports import NullMetrics
from dispatch.batching import GroupCommit
from dispatch.events import RunEvents
from dispatch.inbox_processor import InboxProcessor, ProcessorSettings
from dispatch.inbox_queue import InboxQueue
from dispatch.inbox_store import InboxStore
from dispatch.inbox_tables import inbox_events
from dispatch.inbox_writer import InboxWriter
from dispatch.intake import IntakeItem, IntakeWriter
from dispatch.tables import runs


class ManualClock:
    """Leases and retries expire when the test says so."""

    def __init__(self) -> None:
        self.moment = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)

    def now(self) -> datetime:
        return self.moment

    def advance(self, seconds: float) -> None:
        self.moment += timedelta(seconds=seconds)


@dataclass
class InboxNode:
    """The inbox parts of one node on ``database``."""

    database: Database
    clock: Clock
    triggers: tuple[str, ...] = ("test",)
    max_attempts: int = 3
    retry_delay: float = 0.01
    lease_seconds: float = 30.0
    writer: InboxWriter = field(init=False)
    intake: IntakeWriter = field(init=False)
    commit: GroupCommit[IntakeItem | ArrivingEvent, SubmittedRun | str | AcceptedEvent] = field(
        init=False
    )
    store: InboxStore = field(init=False)
    queue: InboxQueue = field(init=False)
    run_events: RunEvents = field(default_factory=RunEvents)

    def __post_init__(self) -> None:
        self.writer = InboxWriter(self.database)
        self.intake = IntakeWriter(self.database, self.clock, self.writer)
        self.commit = GroupCommit(self.intake.write_with_events, name="test-intake")
        self.store = InboxStore(
            self.database,
            self.clock,
            self.writer,
            self.accept,
            replay_timeout=10,
            poll_interval=0.05,
        )
        for trigger in self.triggers:
            self.store.register(trigger)
        self.queue = InboxQueue(
            self.database,
            self.clock,
            self.intake,
            lease_seconds=self.lease_seconds,
            max_attempts=self.max_attempts,
            retry_delay=self.retry_delay,
            retry_delay_max=1.0,
        )

    async def accept(self, event: ArrivingEvent) -> AcceptedEvent:
        accepted = await self.commit.submit(event)
        assert isinstance(accepted, AcceptedEvent)
        return accepted

    def processor(
        self, processors: Mapping[str, EventProcessor], *, owner: str, concurrency: int = 8
    ) -> InboxProcessor:
        return InboxProcessor(
            ProcessorSettings(
                owner=owner,
                concurrency=concurrency,
                lease_seconds=self.lease_seconds,
                poll_interval=0.05,
            ),
            self.queue,
            processors,
            wake=self.writer.work_available,
            clock=self.clock,
            run_events=self.run_events,
            metrics=NullMetrics(),
            on_finished=self.store.finished.notify,
        )


class RunPerMessage:
    """A channel's processor, faked: the body is JSON ``{"text": …, "id": …}``; one run per
    event, its idempotency key made of the source's id (as channels make theirs), ``ignore`` in
    the text ignores it.
    ``gate`` (if set) holds processing until the test opens it; ``fail`` makes it raise."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.active: dict[str, int] = {}
        self.overlaps: list[str] = []
        self.gate: asyncio.Event | None = None
        self.started = asyncio.Event()
        self.done = asyncio.Event()
        self.fail: Callable[[str], bool] = lambda _text: False
        self.more_requests: Callable[[str], list[RunRequest]] = lambda _text: []
        self.hook: Callable[[str], Awaitable[None]] | None = None

    async def process(self, event: StoredEvent) -> ProcessingResult:
        payload = json.loads(event.body)
        text, source_id = payload["text"], payload.get("id")
        key = event.ordering_key
        if self.active.get(key):
            self.overlaps.append(text)
        self.active[key] = self.active.get(key, 0) + 1
        try:
            self.seen.append(text)
            self.started.set()
            if self.hook is not None:
                await self.hook(text)
            if self.gate is not None:
                await self.gate.wait()
            if self.fail(text):
                raise RuntimeError(f"cannot process {text}")
            if "ignore" in text:
                return Ignored(f"told to ignore {text}")
            request = RunRequest(
                owner_id="default",
                service_id="echo",
                body=json.dumps({"text": text}),
                source=Source.API,
                idempotency_key=None if source_id is None else f"run:{source_id}",
                serial_key=key,
            )
            return [request, *self.more_requests(text)]
        finally:
            self.active[key] -= 1
            self.done.set()


def event(text: str, *, key: str = "chat-1", dedupe: str | None = None) -> ArrivingEvent:
    return ArrivingEvent(
        trigger="test",
        ordering_key=key,
        body=json.dumps({"text": text, "id": dedupe}).encode(),
        dedupe_key=dedupe,
        headers={"x-test": "1"},
    )


async def event_rows(database: Database) -> list[dict[str, Any]]:
    async with database.read() as conn:
        found = await conn.execute(select(inbox_events).order_by(inbox_events.c.id))
        return [dict(row) for row in found.mappings()]


async def run_bodies(database: Database) -> list[str]:
    """The texts of the runs made so far, in creation order."""
    async with database.read() as conn:
        found = await conn.execute(
            select(runs.c.request_body).order_by(runs.c.created_at, runs.c.id)
        )
        return [json.loads(body)["text"] for (body,) in found]


async def wait_for_status(
    node: InboxNode, event_id: str, *statuses: EventStatus, timeout: float = 10
) -> dict[str, Any]:
    """The event's row once its status is one of ``statuses`` (woken when a processor of
    ``node`` records an outcome, re-read every 50 ms for the other changes)."""
    deadline = time.monotonic() + timeout
    while True:
        change = node.store.finished.subscribe(event_id)
        async with node.database.read() as conn:
            row = (
                (await conn.execute(select(inbox_events).where(inbox_events.c.id == event_id)))
                .mappings()
                .first()
            )
        if row is not None and row["status"] in statuses:
            node.store.finished.unsubscribe(event_id, change)
            return dict(row)
        if time.monotonic() > deadline:
            node.store.finished.unsubscribe(event_id, change)
            status = None if row is None else row["status"]
            raise AssertionError(f"event {event_id} is {status}, never {statuses}")
        await node.store.finished.wait(event_id, change, 0.05)
