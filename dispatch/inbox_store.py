"""The durable inbox as edges and operators see it: ``core.inbox.Inbox`` and ``InboxAdmin``.

``accept`` goes through the intake group commit (``QueueGateway.accept``); the rest are the
operator's reads and moves: suspend, resume and discard per trigger, health, the event listing
and replay. Processing itself is the inbox processor's (dispatch/inbox_processor.py).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.ext.asyncio import AsyncConnection

from core.clock import Clock
from core.db import Database
from core.errors import BadRequest, Conflict, NotFound, ReplayNotProcessed
from core.inbox import (
    AcceptedEvent,
    ArrivingEvent,
    EventInfo,
    EventStatus,
    TriggerHealth,
)
from dispatch.events import RunEvents
from dispatch.inbox_tables import ACTIVE, SUSPENDED, inbox_events, inbox_triggers
from dispatch.inbox_writer import InboxWriter, suspended_triggers

HealthDetails = Callable[[TriggerHealth], Awaitable[Mapping[str, object]]]
"""What a channel adds to its trigger's health (``core.channels.Channel.health``)."""

MAX_PAGE = 1000
FINISHED = (EventStatus.PROCESSED, EventStatus.IGNORED, EventStatus.FAILED, EventStatus.DISCARDED)
_EVENT_ID = re.compile(r"evt_[0-9a-f]{29}")


class InboxStore:
    """Implements ``Inbox`` (through ``accept``) and ``InboxAdmin``; triggers are registered by
    the composition root, one per name a channel processes (:meth:`register`)."""

    def __init__(
        self,
        database: Database,
        clock: Clock,
        writer: InboxWriter,
        accept: Callable[[ArrivingEvent], Awaitable[AcceptedEvent]],
        *,
        replay_timeout: float,
        poll_interval: float,
    ) -> None:
        self._db = database
        self._clock = clock
        self._writer = writer
        self._accept = accept
        self._replay_timeout = replay_timeout
        self._poll = poll_interval
        self._triggers: dict[str, HealthDetails | None] = {}
        self.finished = RunEvents()
        """Per-event notifications: the processor of this node calls ``finished.notify(id)``."""

    def register(self, trigger: str, details: HealthDetails | None = None) -> None:
        """Name a configured trigger (a key of a channel's ``processors``)."""
        self._triggers[trigger] = details

    @property
    def work_available(self) -> asyncio.Event:
        """Set when events this node stored may be processed: its inbox processor's wake-up."""
        return self._writer.work_available

    @property
    def trigger_names(self) -> list[str]:
        return sorted(self._triggers)

    async def accept(self, event: ArrivingEvent) -> AcceptedEvent:
        return await self._accept(event)

    # ---- triggers -------------------------------------------------------------------------

    async def triggers(self) -> list[TriggerHealth]:
        return await self._health(self.trigger_names)

    async def suspend(self, name: str) -> TriggerHealth:
        self._known(name)
        async with self._db.write() as conn:
            await self._set_state(conn, name, SUSPENDED)
        [health] = await self._health([name])
        return health

    async def resume(self, name: str) -> TriggerHealth:
        self._known(name)
        async with self._db.write() as conn:
            await self._set_state(conn, name, ACTIVE)
            # The held events keep their ids, so they are processed in arrival order.
            moved = await conn.execute(
                update(inbox_events)
                .where(inbox_events.c.trigger == name, inbox_events.c.status == EventStatus.HELD)
                .values(status=EventStatus.PENDING)
            )
        if moved.rowcount:
            self._writer.work_available.set()
        [health] = await self._health([name])
        return health

    async def discard(self, name: str) -> int:
        self._known(name)
        async with self._db.write() as conn:
            await self._lock_trigger(conn, name)
            now = self._clock.now()
            result = await conn.execute(
                update(inbox_events)
                .where(inbox_events.c.trigger == name, inbox_events.c.status == EventStatus.HELD)
                .values(status=EventStatus.DISCARDED, processed_at=now)
            )
        return int(result.rowcount)

    async def _set_state(self, conn: AsyncConnection, name: str, state: str) -> None:
        await self._lock_trigger(conn, name)
        now = self._clock.now()  # after the lock
        values = {"name": name, "state": state, "changed_at": now}
        dialect = sqlite_dialect if self._db.is_sqlite else postgresql
        statement = dialect.insert(inbox_triggers).values(**values)
        await conn.execute(
            statement.on_conflict_do_update(
                index_elements=[inbox_triggers.c.name],
                set_={"state": state, "changed_at": now},
            )
        )

    async def _lock_trigger(self, conn: AsyncConnection, name: str) -> None:
        """Wait for the accepts reading this trigger's state (their share lock) to commit."""
        if not self._db.is_sqlite:
            await conn.execute(
                select(inbox_triggers.c.name).where(inbox_triggers.c.name == name).with_for_update()
            )

    def _known(self, name: str) -> None:
        if name not in self._triggers:
            raise NotFound("trigger", name)

    async def _health(self, names: list[str]) -> list[TriggerHealth]:
        if not names:
            return []
        events = inbox_events.c
        async with self._db.read() as conn:
            states = dict(
                (
                    await conn.execute(
                        select(inbox_triggers.c.name, inbox_triggers.c.state).where(
                            inbox_triggers.c.name.in_(names)
                        )
                    )
                ).all()
            )
            counts: dict[str, dict[str, int]] = {name: {} for name in names}
            for trigger, status, count in await conn.execute(
                select(events.trigger, events.status, func.count())
                .where(events.trigger.in_(names))
                .group_by(events.trigger, events.status)
            ):
                counts[trigger][status] = int(count)
            received = dict(
                (
                    await conn.execute(
                        select(events.trigger, func.max(events.received_at))
                        .where(events.trigger.in_(names))
                        .group_by(events.trigger)
                    )
                ).all()
            )
            processed = dict(
                (
                    await conn.execute(
                        select(events.trigger, func.max(events.processed_at))
                        .where(
                            events.trigger.in_(names),
                            events.status.in_((EventStatus.PROCESSED, EventStatus.IGNORED)),
                        )
                        .group_by(events.trigger)
                    )
                ).all()
            )
            errors: dict[str, tuple[str, Any]] = {}
            for trigger, error, error_at in await conn.execute(
                select(events.trigger, events.error, events.error_at)
                .where(events.trigger.in_(names), events.error_at.is_not(None))
                .order_by(events.error_at.desc())
            ):
                errors.setdefault(trigger, (error, error_at))
        found: list[TriggerHealth] = []
        for name in names:
            by_status = {status.value: counts[name].get(status.value, 0) for status in EventStatus}
            error, error_at = errors.get(name, (None, None))
            health = TriggerHealth(
                name=name,
                state=states.get(name, ACTIVE),
                last_received_at=_aware(received.get(name)),
                last_processed_at=_aware(processed.get(name)),
                last_error=error,
                last_error_at=_aware(error_at),
                counts=by_status,
                backlog=by_status[EventStatus.PENDING] + by_status[EventStatus.HELD],
            )
            details = self._triggers.get(name)
            if details is not None:
                health = _with_details(health, await details(health))
            found.append(health)
        return found

    # ---- events ---------------------------------------------------------------------------

    async def events(
        self,
        *,
        trigger: str | None,
        status: EventStatus | None,
        limit: int,
        cursor: str | None,
        include_body: bool,
    ) -> tuple[list[EventInfo], str | None]:
        if not 1 <= limit <= MAX_PAGE:
            raise BadRequest(f"limit must be between 1 and {MAX_PAGE}, not {limit}")
        if status is not None:
            try:
                status = EventStatus(status)
            except ValueError:
                choices = ", ".join(s.value for s in EventStatus)
                raise BadRequest(f"status {status!r} is not one of {choices}") from None
        query = select(*_columns(include_body)).order_by(inbox_events.c.id.desc()).limit(limit + 1)
        if trigger is not None:
            self._known(trigger)
            query = query.where(inbox_events.c.trigger == trigger)
        if status is not None:
            query = query.where(inbox_events.c.status == status)
        if cursor is not None:
            query = query.where(inbox_events.c.id < _decode_cursor(cursor))
        async with self._db.read() as conn:
            rows = list((await conn.execute(query)).mappings())
        page = [_info(row, include_body) for row in rows[:limit]]
        more = len(rows) > limit
        return page, (_encode_cursor(page[-1].id) if more and page else None)

    async def event(self, event_id: str, *, include_body: bool) -> EventInfo:
        async with self._db.read() as conn:
            row = (
                (
                    await conn.execute(
                        select(*_columns(include_body)).where(inbox_events.c.id == event_id)
                    )
                )
                .mappings()
                .first()
            )
        if row is None:
            raise NotFound("inbox event", event_id)
        return _info(row, include_body)

    async def replay(self, event_id: str) -> list[str]:
        async with self._db.write() as conn:
            original = (
                (await conn.execute(select(inbox_events).where(inbox_events.c.id == event_id)))
                .mappings()
                .first()
            )
            if original is None:
                raise NotFound("inbox event", event_id)
            if original["body"] is None:
                raise Conflict(
                    f"inbox event {event_id} can no longer be replayed: retention dropped its "
                    "payload (inbox.body_max_age_days)"
                )
            trigger = original["trigger"]
            if trigger in await suspended_triggers(conn, self._db, {trigger}):
                raise Conflict(f"trigger {trigger!r} is suspended: resume it to replay its events")
            new_id = self._writer.ids.next()
            await conn.execute(
                inbox_events.insert().values(
                    id=new_id,
                    trigger=trigger,
                    dedupe_key=None,
                    ordering_key=original["ordering_key"],
                    status=EventStatus.PENDING,
                    received_at=self._clock.now(),
                    headers=original["headers"],
                    body=original["body"],
                    attempts=0,
                    replay_of=event_id,
                )
            )
        self._writer.work_available.set()
        return await self._wait_processed(new_id, event_id)

    async def _wait_processed(self, new_id: str, original_id: str) -> list[str]:
        """The replay's run ids once a processor (here or on another node) recorded it."""
        deadline = time.monotonic() + self._replay_timeout
        while True:
            change = self.finished.subscribe(new_id)
            info = await self.event(new_id, include_body=False)
            remaining = deadline - time.monotonic()
            if info.status in (EventStatus.PROCESSED, EventStatus.IGNORED):
                self.finished.unsubscribe(new_id, change)
                return list(info.run_ids)
            if info.status is EventStatus.FAILED:
                self.finished.unsubscribe(new_id, change)
                raise ReplayNotProcessed(new_id, original_id, f"it failed: {info.error}")
            if remaining <= 0:
                self.finished.unsubscribe(new_id, change)
                raise ReplayNotProcessed(
                    new_id,
                    original_id,
                    f"it is still {info.status.value} after {self._replay_timeout:g} s "
                    "(inbox.replay_timeout; is a worker node running?)",
                )
            await self.finished.wait(new_id, change, min(remaining, self._poll))


def _columns(include_body: bool) -> list[Any]:
    skipped = set() if include_body else {"body", "headers"}
    return [column for column in inbox_events.c if column.name not in skipped]


def _info(row: Any, include_body: bool) -> EventInfo:
    return EventInfo(
        id=row["id"],
        trigger=row["trigger"],
        status=EventStatus(row["status"]),
        dedupe_key=row["dedupe_key"],
        ordering_key=row["ordering_key"],
        received_at=row["received_at"],
        processed_at=row["processed_at"],
        attempts=row["attempts"],
        error=row["error"],
        ignored_reason=row["ignored_reason"],
        run_ids=list(row["run_ids"] or []),
        replay_of=row["replay_of"],
        headers=dict(row["headers"] or {}) if include_body else None,
        body=row["body"] if include_body else None,
    )


def _encode_cursor(event_id: str) -> str:
    return base64.urlsafe_b64encode(event_id.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> str:
    try:
        event_id = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        event_id = ""
    if not _EVENT_ID.fullmatch(event_id):
        raise BadRequest(f"cursor {cursor!r} is not one this API returned")
    return event_id


def _aware(moment: datetime | str | None) -> datetime | None:
    """An aggregate's timestamp, timezone-aware UTC whatever the driver handed back."""
    if moment is None:
        return None
    if isinstance(moment, str):  # SQLite without the column type's conversion
        moment = datetime.fromisoformat(moment)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _with_details(health: TriggerHealth, details: Mapping[str, object]) -> TriggerHealth:
    return replace(health, details=dict(details))
