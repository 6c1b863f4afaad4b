"""The inbox: every provider event stored raw before its source is acknowledged (DESIGN §1).

An edge (Slack HTTP, Twilio, email webhooks, SMTP ``DATA``, later Socket Mode and IMAP) only
authenticates the raw bytes, computes two cheap keys and calls :meth:`Inbox.accept`; the event's
processing (provider API calls, downloads, routes, guards) happens later, in the inbox processor,
through the channel's :class:`EventProcessor`. Trigger names: ``slack``, ``whatsapp``,
``email:smtp``, ``email:mailgun``, ``email:sendgrid`` (later ``slack:socket``,
``email:imap:<mailbox>``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from core.models import RunRequest


class EventStatus(StrEnum):
    """Where an inbox event stands. ``pending`` includes an event a processor holds a lease on."""

    PENDING = "pending"
    HELD = "held"
    """Arrived while its trigger was suspended: stored and acknowledged, not processed."""
    PROCESSED = "processed"
    IGNORED = "ignored"
    FAILED = "failed"
    DISCARDED = "discarded"


@dataclass(frozen=True, slots=True)
class ArrivingEvent:
    """What an edge writes: the raw event and its two keys (a plain class: hot path).

    ``dedupe_key`` names the event at its source (Slack ``event_id``, Twilio ``MessageSid``,
    email ``Message-ID``; ``None`` when the source has none) and is unique across triggers, so
    the channel prefixes it (``slack:Ev123``, ``email:<id@host>``). ``ordering_key`` names the
    conversation: events sharing one are processed one at a time in arrival order.
    ``headers`` are only those the processing needs (lower-case names).
    """

    trigger: str
    ordering_key: str
    body: bytes
    dedupe_key: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AcceptedEvent:
    """What the edge learns once the event is committed."""

    id: str
    duplicate: bool
    """``True`` when the dedupe key was stored before: nothing new was written."""
    held: bool
    """``True`` when the trigger is suspended: the event waits for resume or discard."""


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An inbox event as its processor gets it."""

    id: str
    trigger: str
    ordering_key: str
    body: bytes
    headers: Mapping[str, str]
    received_at: datetime
    dedupe_key: str | None = None
    attempts: int = 0
    """Earlier processing attempts that raised (0 on the first)."""
    replay_of: str | None = None
    """The event this one replays: its run requests get new idempotency keys (a new run)."""


@dataclass(frozen=True, slots=True)
class Ignored:
    """Processing decided the event makes no run (a bot's own message, an edit): why."""

    reason: str


ProcessingResult = Sequence[RunRequest] | Ignored
"""The run requests an event makes (none is fine: a status callback), or why it makes none."""


class Inbox(Protocol):
    """Where edges write events (``dispatch`` implements it; an in-memory one for unit tests).

    ``accept`` returns only after the event is committed (group-committed with other intakes):
    an edge acknowledges its source after ``accept`` returns and never before. A ``dedupe_key``
    stored before returns that event (``duplicate`` true), so a retry is acknowledged like the
    original and makes nothing new.
    """

    async def accept(self, event: ArrivingEvent) -> AcceptedEvent: ...


class EventProcessor(Protocol):
    """A channel's processing of one of its trigger's events into run requests.

    Called by the inbox processor (on a node with the worker role, under a lease), one event at
    a time per ordering key, in arrival order. It may call provider APIs and download files; it
    must be safe to call again for the same event (after a crash, or a retry): run requests carry
    idempotency keys, so a second call makes no second run. Raising counts as a failed attempt;
    after ``inbox.max_attempts`` the event is marked failed with the error and the next event of
    its conversation goes on. The inbox marks the event processed and submits the returned run
    requests in one transaction.
    """

    async def process(self, event: StoredEvent) -> ProcessingResult: ...


@dataclass(frozen=True, slots=True)
class TriggerHealth:
    """One trigger as an operator sees it (``GET /api/v1/triggers``)."""

    name: str
    state: str
    """``active`` or ``suspended``."""
    last_received_at: datetime | None
    last_processed_at: datetime | None
    last_error: str | None
    last_error_at: datetime | None
    counts: Mapping[str, int]
    """Events by :class:`EventStatus` value."""
    backlog: int
    """Events waiting: ``pending`` plus ``held``."""
    details: Mapping[str, object] = field(default_factory=dict)
    """What the channel adds of its own (a socket's connected-since, a mailbox's state)."""


@dataclass(frozen=True, slots=True)
class EventInfo:
    """One inbox event as the management API lists it (``body`` only when asked for)."""

    id: str
    trigger: str
    status: EventStatus
    dedupe_key: str | None
    ordering_key: str
    received_at: datetime
    processed_at: datetime | None
    attempts: int
    error: str | None
    ignored_reason: str | None
    run_ids: Sequence[str]
    replay_of: str | None
    headers: Mapping[str, str] | None = None
    body: bytes | None = None


class InboxAdmin(Protocol):
    """The inbox as operators drive it (REST ``/api/v1/triggers``, ``/api/v1/inbox``, the CLI).

    Unknown trigger or event names raise ``NotFound`` (core/errors.py); a bad filter or cursor
    raises ``BadRequest`` naming it.
    """

    async def triggers(self) -> list[TriggerHealth]:
        """Every configured trigger, with or without events, in name order."""
        ...

    async def suspend(self, name: str) -> TriggerHealth:
        """New events of ``name`` are stored and acknowledged as usual, kept ``held``."""
        ...

    async def resume(self, name: str) -> TriggerHealth:
        """Held events of ``name`` become pending again and are processed in arrival order."""
        ...

    async def discard(self, name: str) -> int:
        """Mark every held event of ``name`` discarded; returns how many."""
        ...

    async def events(
        self,
        *,
        trigger: str | None,
        status: EventStatus | None,
        limit: int,
        cursor: str | None,
        include_body: bool,
    ) -> tuple[list[EventInfo], str | None]:
        """Newest first; the second value is the cursor of the next page (``None``: no more)."""
        ...

    async def event(self, event_id: str, *, include_body: bool) -> EventInfo: ...

    async def replay(self, event_id: str) -> list[str]:
        """Process a stored event again as a new event (``replay_of`` it); returns the ids of
        the runs it made (a replay's run requests get fresh idempotency keys)."""
        ...
