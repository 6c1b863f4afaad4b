"""The inbox processor's SQL: lease events, renew, and record how their processing ended.

A pending event is taken only when no earlier event of its ordering key is still pending (leased,
waiting out a retry, or not yet taken): a conversation's events are processed one at a time, in
id order (arrival order); held, finished and failed events hold nothing back. A lease that
expired (its node died) is taken again and counts as an attempt, so an event that kills its
processor every time still ends, failed. Finishing is one transaction per batch: the run
requests an event made are written (``IntakeWriter.write_in``, idempotency keys dedupe as for
any intake) and the event marked processed, only while this processor still holds its lease.
"""

from __future__ import annotations

import hashlib
import logging
from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, bindparam, exists, or_, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from core.clock import Clock
from core.db import Database
from core.inbox import EventStatus, Ignored, ProcessingResult, StoredEvent
from core.models import RunRequest, SubmittedRun
from dispatch.inbox_tables import inbox_events
from dispatch.intake import IntakeItem, IntakeWriter

logger = logging.getLogger(__name__)

IDEMPOTENCY_KEY_LENGTH = 300  # runs.idempotency_key


@dataclass(frozen=True, slots=True)
class Finished:
    """How one event's processing was recorded."""

    event_id: str
    status: EventStatus | None
    """``None``: this processor had lost the event's lease; nothing was written."""
    runs: Sequence[tuple[RunRequest, SubmittedRun]] = ()
    retry_at: datetime | None = None


class InboxQueue:
    """Stateless apart from its settings; safe to share between processors."""

    def __init__(
        self,
        database: Database,
        clock: Clock,
        intake: IntakeWriter,
        *,
        lease_seconds: float,
        max_attempts: int,
        retry_delay: float,
        retry_delay_max: float,
    ) -> None:
        self._db = database
        self._clock = clock
        self._intake = intake
        self._lease = timedelta(seconds=lease_seconds)
        self._max_attempts = max_attempts
        self._retry_delay = retry_delay
        self._retry_delay_max = retry_delay_max

    async def claim(
        self,
        owner: str,
        triggers: Collection[str],
        limit: int,
        busy: Collection[str] = (),
    ) -> list[StoredEvent]:
        """Lease up to ``limit`` events of ``triggers`` that may be processed now, oldest first.

        ``busy``: the events ``owner`` is processing still. Their leases may have expired (the
        renewals failed, say while the database was away) and another node may take them over,
        but this node must not start them a second time beside the first.
        """
        if limit <= 0 or not triggers:
            return []
        async with self._db.write() as conn:
            return await self._claim_in(conn, owner, triggers, limit, self._clock.now(), busy)

    async def _claim_in(
        self,
        conn: AsyncConnection,
        owner: str,
        triggers: Collection[str],
        limit: int,
        now: datetime,
        busy: Collection[str],
    ) -> list[StoredEvent]:
        earlier = inbox_events.alias("earlier")
        query = (
            select(inbox_events)
            .where(
                inbox_events.c.status == EventStatus.PENDING,
                inbox_events.c.trigger.in_(sorted(triggers)),
                or_(
                    inbox_events.c.next_attempt_at.is_(None),
                    inbox_events.c.next_attempt_at <= now,
                ),
                or_(
                    inbox_events.c.lease_expires_at.is_(None),
                    inbox_events.c.lease_expires_at < now,
                ),
                ~exists().where(
                    earlier.c.ordering_key == inbox_events.c.ordering_key,
                    earlier.c.status == EventStatus.PENDING,
                    earlier.c.id < inbox_events.c.id,
                ),
            )
            .order_by(inbox_events.c.id)
            .limit(limit)
        )
        if busy:
            query = query.where(inbox_events.c.id.not_in(sorted(busy)))
        if not self._db.is_sqlite:
            # Two nodes see the same first events of their keys; each takes the unlocked ones.
            query = query.with_for_update(skip_locked=True, of=inbox_events)
        rows = list((await conn.execute(query)).mappings())
        if not rows:
            return []
        taken: list[RowMapping] = []
        for row in rows:
            if row["lease_owner"] is None:
                taken.append(row)
                continue
            # Its processor stopped (lease expired): that was an attempt.
            attempts = row["attempts"] + 1
            error = f"its processor stopped (node {row['lease_owner']}) before it finished"
            logger.warning("inbox event %s: %s (attempt %d)", row["id"], error, attempts)
            if attempts >= self._max_attempts:
                await conn.execute(
                    update(inbox_events)
                    .where(inbox_events.c.id == row["id"])
                    .values(_failed(attempts, error, now))
                )
                continue
            await conn.execute(
                update(inbox_events)
                .where(inbox_events.c.id == row["id"])
                .values(attempts=attempts, error=error, error_at=now)
            )
            taken.append({**row, "attempts": attempts})  # type: ignore[arg-type]
        if not taken:
            return []
        await conn.execute(
            update(inbox_events)
            .where(inbox_events.c.id.in_([row["id"] for row in taken]))
            .values(lease_owner=owner, lease_expires_at=now + self._lease)
        )
        return [_stored(row) for row in taken]

    async def renew(self, owner: str, event_ids: Collection[str]) -> set[str]:
        """Extend the leases ``owner`` holds; returns the ids it still holds."""
        if not event_ids:
            return set()
        async with self._db.write() as conn:
            now = self._clock.now()
            result = await conn.execute(
                _held(owner, event_ids)
                .values(lease_expires_at=now + self._lease)
                .returning(inbox_events.c.id)
            )
            return set(result.scalars())

    async def release(self, owner: str, event_ids: Collection[str]) -> None:
        """Hand events back unprocessed (this node stops); the attempt does not count."""
        if not event_ids:
            return
        async with self._db.write() as conn:
            await conn.execute(
                _held(owner, event_ids).values(lease_owner=None, lease_expires_at=None)
            )

    async def finish(
        self, owner: str, outcomes: list[tuple[StoredEvent, ProcessingResult | BaseException]]
    ) -> list[Finished | BaseException]:
        """Record a batch of outcomes in one transaction.

        A processed event's run requests are committed with its mark, or neither is.
        """
        answers, _ = await self.finish_and_claim(owner, outcomes, (), 0)
        return answers

    async def finish_and_claim(
        self,
        owner: str,
        outcomes: list[tuple[StoredEvent, ProcessingResult | BaseException]],
        triggers: Collection[str],
        limit: int,
        busy: Collection[str] = (),
    ) -> tuple[list[Finished | BaseException], list[StoredEvent]]:
        """:meth:`finish`, then :meth:`claim` in the same transaction: the events these outcomes
        held back (the next of each conversation) are taken without another commit."""
        async with self._db.write() as conn:
            now = self._clock.now()
            answers = await self._finish_in(conn, owner, outcomes, now)
            claimed: list[StoredEvent] = []
            if limit > 0 and triggers:
                claimed = await self._claim_in(conn, owner, triggers, limit, now, busy)
        return answers, claimed

    async def _finish_in(
        self,
        conn: AsyncConnection,
        owner: str,
        outcomes: list[tuple[StoredEvent, ProcessingResult | BaseException]],
        now: datetime,
    ) -> list[Finished | BaseException]:
        query = select(inbox_events.c.id).where(
            inbox_events.c.id.in_([event.id for event, _ in outcomes]),
            inbox_events.c.lease_owner == owner,
            inbox_events.c.status == EventStatus.PENDING,
        )
        if not self._db.is_sqlite:
            query = query.with_for_update()
        held = set((await conn.execute(query)).scalars())
        requests: list[IntakeItem] = []
        spans: dict[str, slice] = {}
        for event, result in outcomes:
            if event.id in held and not isinstance(result, Ignored | BaseException):
                start = len(requests)
                requests.extend(for_event(event, request) for request in result)
                spans[event.id] = slice(start, len(requests))
        written = await self._intake.write_in(conn, requests, now) if requests else []
        answers: list[Finished | BaseException] = []
        changes: dict[EventStatus, list[dict[str, Any]]] = defaultdict(list)
        for event, result in outcomes:
            if event.id not in held:
                logger.warning("inbox event %s: its lease was lost; not recorded", event.id)
                answers.append(Finished(event.id, None))
            elif isinstance(result, Ignored):
                changes[EventStatus.IGNORED].append({"b_id": event.id, "b_why": result.reason})
                answers.append(Finished(event.id, EventStatus.IGNORED))
            else:
                span = spans.get(event.id, slice(0, 0))
                made, error = _made(requests[span], written[span], result)
                if error is None:
                    run_ids = [submitted.id for _, submitted in made]
                    changes[EventStatus.PROCESSED].append({"b_id": event.id, "b_runs": run_ids})
                    answers.append(Finished(event.id, EventStatus.PROCESSED, made))
                else:
                    answers.append(self._failure(event, error, now, changes))
        await _apply(conn, changes, now)
        return answers

    def _failure(
        self,
        event: StoredEvent,
        error: BaseException,
        now: datetime,
        changes: dict[EventStatus, list[dict[str, Any]]],
    ) -> Finished:
        attempts = event.attempts + 1
        text = f"{type(error).__name__}: {error}"[:2000]
        logger.warning(
            "inbox event %s: processing failed (attempt %d of %d): %s",
            event.id,
            attempts,
            self._max_attempts,
            text,
        )
        failed = attempts >= self._max_attempts
        retry_at = None if failed else now + timedelta(seconds=self._backoff(attempts))
        status = EventStatus.FAILED if failed else EventStatus.PENDING
        changes[EventStatus.FAILED].append(
            {
                "b_id": event.id,
                "b_status": status,
                "b_attempts": attempts,
                "b_error": text,
                "b_next": retry_at,
                "b_done": now if failed else None,
            }
        )
        return Finished(event.id, status, retry_at=retry_at)

    def _backoff(self, attempts: int) -> float:
        return float(min(self._retry_delay * 2 ** (attempts - 1), self._retry_delay_max))


def _made(
    requests: list[IntakeItem],
    written: list[SubmittedRun | str | BaseException],
    result: ProcessingResult | BaseException,
) -> tuple[list[tuple[RunRequest, SubmittedRun]], BaseException | None]:
    """The runs an event's requests made, or the first error (the processor's or a request's)."""
    if isinstance(result, BaseException):
        return [], result
    made: list[tuple[RunRequest, SubmittedRun]] = []
    for request, submitted in zip(requests, written, strict=True):
        if isinstance(submitted, BaseException):
            return [], submitted
        if isinstance(submitted, SubmittedRun) and isinstance(request, RunRequest):
            made.append((request, submitted))
    return made, None


async def _apply(
    conn: AsyncConnection, changes: dict[EventStatus, list[dict[str, Any]]], now: datetime
) -> None:
    """One executemany per kind of outcome; every one ends this processor's lease."""
    released = {"lease_owner": None, "lease_expires_at": None}
    by_id = inbox_events.c.id == bindparam("b_id")
    done = {"processed_at": now, "next_attempt_at": None, **released}
    if processed := changes.get(EventStatus.PROCESSED):
        await conn.execute(
            update(inbox_events)
            .where(by_id)
            .values(status=EventStatus.PROCESSED, run_ids=bindparam("b_runs"), **done),
            processed,
        )
    if ignored := changes.get(EventStatus.IGNORED):
        await conn.execute(
            update(inbox_events)
            .where(by_id)
            .values(
                status=EventStatus.IGNORED,
                ignored_reason=bindparam("b_why"),
                run_ids=[],
                **done,
            ),
            ignored,
        )
    if failures := changes.get(EventStatus.FAILED):
        await conn.execute(
            update(inbox_events)
            .where(by_id)
            .values(
                status=bindparam("b_status"),
                attempts=bindparam("b_attempts"),
                error=bindparam("b_error"),
                error_at=now,
                next_attempt_at=bindparam("b_next"),
                processed_at=bindparam("b_done"),
                **released,
            ),
            failures,
        )


def for_event(event: StoredEvent, request: RunRequest) -> RunRequest:
    """A replay's run requests get keys of their own, so that it really makes a new run (and
    still one only, however often the replay itself is processed)."""
    if event.replay_of is None:
        return request
    key = request.idempotency_key
    if key is not None:
        key = f"{key}:replay:{event.id}"
        if len(key) > IDEMPOTENCY_KEY_LENGTH:
            key = f"replay:{event.id}:{hashlib.sha256(key.encode()).hexdigest()}"
    return request.model_copy(update={"idempotency_key": key, "run_id": None})


def _failed(attempts: int, error: str, now: datetime) -> dict[str, Any]:
    return {
        "status": EventStatus.FAILED,
        "attempts": attempts,
        "error": error,
        "error_at": now,
        "processed_at": now,
        "next_attempt_at": None,
        "lease_owner": None,
        "lease_expires_at": None,
    }


def _held(owner: str, event_ids: Collection[str]) -> Any:
    return update(inbox_events).where(
        and_(
            inbox_events.c.id.in_(list(event_ids)),
            inbox_events.c.lease_owner == owner,
            inbox_events.c.status == EventStatus.PENDING,
        )
    )


def _stored(row: RowMapping | dict[str, Any]) -> StoredEvent:
    return StoredEvent(
        id=row["id"],
        trigger=row["trigger"],
        ordering_key=row["ordering_key"],
        body=row["body"] or b"",
        headers=row["headers"] or {},
        received_at=row["received_at"],
        dedupe_key=row["dedupe_key"],
        attempts=row["attempts"],
        replay_of=row["replay_of"],
    )
