"""An in-memory :class:`core.inbox.Inbox` and :class:`core.inbox.InboxAdmin` for the unit layer:
the same answers, no durability.

Edges, processors and the operator's surfaces are tested against it without a database;
``process_pending`` plays the inbox processor's part (arrival order per ordering key, results
recorded per event). There is no run queue here: a run id is made up per run request.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime

from core.clock import Clock, SystemClock
from core.errors import BadRequest, Conflict, NotFound
from core.inbox import (
    AcceptedEvent,
    ArrivingEvent,
    EventInfo,
    EventProcessor,
    EventStatus,
    Ignored,
    ProcessingResult,
    StoredEvent,
    TriggerHealth,
)
from core.models import RunRequest


@dataclass(slots=True)
class MemoryEvent:
    event: StoredEvent
    status: EventStatus
    result: ProcessingResult | None = None
    error: str | None = None
    processed_at: datetime | None = None
    run_ids: list[str] = field(default_factory=list)


@dataclass(slots=True)
class MemoryInbox:
    """Events in a list; a dedupe key seen before answers the first event, as the real one.

    ``triggers`` are the configured trigger names (``triggers()`` lists them with or without
    events); ``processors`` are what ``replay`` processes with.
    """

    clock: Clock = field(default_factory=SystemClock)
    suspended: set[str] = field(default_factory=set)
    entries: list[MemoryEvent] = field(default_factory=list)
    """Every event in arrival order (``events`` is the :class:`InboxAdmin` listing)."""
    triggers_configured: set[str] = field(default_factory=set)
    processors: dict[str, EventProcessor] = field(default_factory=dict)
    _by_key: dict[str, MemoryEvent] = field(default_factory=dict)
    _runs: int = 0

    async def accept(self, event: ArrivingEvent) -> AcceptedEvent:
        if event.dedupe_key is not None and event.dedupe_key in self._by_key:
            earlier = self._by_key[event.dedupe_key]
            held = earlier.status is EventStatus.HELD
            return AcceptedEvent(earlier.event.id, duplicate=True, held=held)
        stored = StoredEvent(
            id=self._next_id(),
            trigger=event.trigger,
            ordering_key=event.ordering_key,
            body=event.body,
            headers=dict(event.headers),
            received_at=self.clock.now(),
            dedupe_key=event.dedupe_key,
        )
        held = event.trigger in self.suspended
        entry = MemoryEvent(stored, EventStatus.HELD if held else EventStatus.PENDING)
        self.entries.append(entry)
        if event.dedupe_key is not None:
            self._by_key[event.dedupe_key] = entry
        return AcceptedEvent(stored.id, duplicate=False, held=held)

    async def process_pending(self, processors: Mapping[str, EventProcessor]) -> None:
        """Process every pending event once, in arrival order; a raise marks it failed."""
        for entry in self.entries:
            if entry.status is EventStatus.PENDING:
                await self._process(entry, processors[entry.event.trigger])

    def run_requests(self) -> list[RunRequest]:
        """Every run request processing made so far, in arrival order."""
        return [
            request
            for entry in self.entries
            if entry.result is not None and not isinstance(entry.result, Ignored)
            for request in entry.result
        ]

    # ---- InboxAdmin ----------------------------------------------------------------------

    async def triggers(self) -> list[TriggerHealth]:
        names = self.triggers_configured | {entry.event.trigger for entry in self.entries}
        return [self._health(name) for name in sorted(names | self.suspended)]

    async def suspend(self, name: str) -> TriggerHealth:
        self._known(name)
        self.suspended.add(name)
        return self._health(name)

    async def resume(self, name: str) -> TriggerHealth:
        self._known(name)
        self.suspended.discard(name)
        for entry in self._of(name, EventStatus.HELD):
            entry.status = EventStatus.PENDING
        return self._health(name)

    async def discard(self, name: str) -> int:
        self._known(name)
        held = self._of(name, EventStatus.HELD)
        for entry in held:
            entry.status = EventStatus.DISCARDED
        return len(held)

    async def events(
        self,
        *,
        trigger: str | None,
        status: EventStatus | None,
        limit: int,
        cursor: str | None,
        include_body: bool,
    ) -> tuple[list[EventInfo], str | None]:
        # The cursor is the position (in arrival order) of the last event a page showed.
        if trigger is not None:
            self._known(trigger)
        start = len(self.entries)
        if cursor is not None:
            if not cursor.isdigit() or int(cursor) > len(self.entries):
                raise BadRequest(f"invalid cursor {cursor!r}: pass the next_cursor of a page")
            start = int(cursor)

        def wanted(entry: MemoryEvent) -> bool:
            return (trigger is None or entry.event.trigger == trigger) and (
                status is None or entry.status is status
            )

        page: list[EventInfo] = []
        position = start
        while position > 0 and len(page) < limit:
            position -= 1
            if wanted(self.entries[position]):
                page.append(self._info(self.entries[position], include_body))
        more = any(wanted(entry) for entry in self.entries[:position])
        return page, (str(position) if more else None)

    async def event(self, event_id: str, *, include_body: bool) -> EventInfo:
        return self._info(self._entry(event_id), include_body)

    async def replay(self, event_id: str) -> list[str]:
        original = self._entry(event_id).event
        processor = self.processors.get(original.trigger)
        if processor is None:
            raise Conflict(f"no processor for trigger {original.trigger!r} in this inbox")
        copy = replace(
            original,
            id=self._next_id(),
            received_at=self.clock.now(),
            dedupe_key=None,
            attempts=0,
            replay_of=original.id,
        )
        entry = MemoryEvent(copy, EventStatus.PENDING)
        self.entries.append(entry)
        await self._process(entry, processor)
        return list(entry.run_ids)

    # ---- internals -----------------------------------------------------------------------

    async def _process(self, entry: MemoryEvent, processor: EventProcessor) -> None:
        try:
            entry.result = await processor.process(entry.event)
        except Exception as exc:
            entry.status, entry.error = EventStatus.FAILED, f"{type(exc).__name__}: {exc}"
            return
        entry.processed_at = self.clock.now()
        if isinstance(entry.result, Ignored):
            entry.status = EventStatus.IGNORED
            return
        entry.status = EventStatus.PROCESSED
        for _ in entry.result:
            self._runs += 1
            entry.run_ids.append(f"run_memory_{self._runs:06d}")

    def _next_id(self) -> str:
        return f"evt_{len(self.entries) + 1:06d}"

    def _known(self, name: str) -> None:
        if name not in self.triggers_configured and not any(
            entry.event.trigger == name for entry in self.entries
        ):
            raise NotFound("trigger", name)

    def _of(self, name: str, status: EventStatus) -> list[MemoryEvent]:
        return [e for e in self.entries if e.event.trigger == name and e.status is status]

    def _entry(self, event_id: str) -> MemoryEvent:
        for entry in self.entries:
            if entry.event.id == event_id:
                return entry
        raise NotFound("inbox event", event_id)

    def _health(self, name: str) -> TriggerHealth:
        mine = [entry for entry in self.entries if entry.event.trigger == name]
        counts = {status.value: 0 for status in EventStatus}
        for entry in mine:
            counts[entry.status.value] += 1
        failed = [entry for entry in mine if entry.error is not None]
        processed = [entry.processed_at for entry in mine if entry.processed_at is not None]
        return TriggerHealth(
            name=name,
            state="suspended" if name in self.suspended else "active",
            last_received_at=mine[-1].event.received_at if mine else None,
            last_processed_at=max(processed) if processed else None,
            last_error=failed[-1].error if failed else None,
            last_error_at=failed[-1].event.received_at if failed else None,
            counts=counts,
            backlog=counts[EventStatus.PENDING.value] + counts[EventStatus.HELD.value],
        )

    @staticmethod
    def _info(entry: MemoryEvent, include_body: bool) -> EventInfo:
        event = entry.event
        ignored = entry.result.reason if isinstance(entry.result, Ignored) else None
        return EventInfo(
            id=event.id,
            trigger=event.trigger,
            status=entry.status,
            dedupe_key=event.dedupe_key,
            ordering_key=event.ordering_key,
            received_at=event.received_at,
            processed_at=entry.processed_at,
            attempts=event.attempts + (1 if entry.status is EventStatus.FAILED else 0),
            error=entry.error,
            ignored_reason=ignored,
            run_ids=list(entry.run_ids),
            replay_of=event.replay_of,
            headers=dict(event.headers) if include_body else None,
            body=event.body if include_body else None,
        )
