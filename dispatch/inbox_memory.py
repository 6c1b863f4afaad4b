"""An in-memory :class:`core.inbox.Inbox` for the unit layer: the same answers, no durability.

Edges and processors are tested against it without a database; ``process_pending`` plays the
inbox processor's part (arrival order per ordering key, results recorded per event).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from core.clock import Clock, SystemClock
from core.inbox import (
    AcceptedEvent,
    ArrivingEvent,
    EventProcessor,
    EventStatus,
    Ignored,
    ProcessingResult,
    StoredEvent,
)
from core.models import RunRequest


@dataclass(slots=True)
class MemoryEvent:
    event: StoredEvent
    status: EventStatus
    result: ProcessingResult | None = None
    error: str | None = None


@dataclass(slots=True)
class MemoryInbox:
    """Events in a list; a dedupe key seen before answers the first event, as the real one."""

    clock: Clock = field(default_factory=SystemClock)
    suspended: set[str] = field(default_factory=set)
    events: list[MemoryEvent] = field(default_factory=list)
    _by_key: dict[str, MemoryEvent] = field(default_factory=dict)

    async def accept(self, event: ArrivingEvent) -> AcceptedEvent:
        if event.dedupe_key is not None and event.dedupe_key in self._by_key:
            earlier = self._by_key[event.dedupe_key]
            held = earlier.status is EventStatus.HELD
            return AcceptedEvent(earlier.event.id, duplicate=True, held=held)
        stored = StoredEvent(
            id=f"evt_{len(self.events) + 1:06d}",
            trigger=event.trigger,
            ordering_key=event.ordering_key,
            body=event.body,
            headers=dict(event.headers),
            received_at=self.clock.now(),
            dedupe_key=event.dedupe_key,
        )
        held = event.trigger in self.suspended
        entry = MemoryEvent(stored, EventStatus.HELD if held else EventStatus.PENDING)
        self.events.append(entry)
        if event.dedupe_key is not None:
            self._by_key[event.dedupe_key] = entry
        return AcceptedEvent(stored.id, duplicate=False, held=held)

    async def process_pending(self, processors: Mapping[str, EventProcessor]) -> None:
        """Process every pending event once, in arrival order; a raise marks it failed."""
        for entry in self.events:
            if entry.status is not EventStatus.PENDING:
                continue
            try:
                entry.result = await processors[entry.event.trigger].process(entry.event)
            except Exception as exc:
                entry.status, entry.error = EventStatus.FAILED, f"{type(exc).__name__}: {exc}"
                continue
            ignored = isinstance(entry.result, Ignored)
            entry.status = EventStatus.IGNORED if ignored else EventStatus.PROCESSED

    def run_requests(self) -> list[RunRequest]:
        """Every run request processing made so far, in arrival order."""
        return [
            request
            for entry in self.events
            if entry.result is not None and not isinstance(entry.result, Ignored)
            for request in entry.result
        ]
