"""The delivery outbox (DESIGN §1, step 4): a run's reply, sent once, with retries.

The delivery row is written in the transaction that completes the run (``delivery_row``), so a
reply exists exactly when its run finished, whatever happens to the process afterwards. The
drain loop leases due deliveries, hands each to its channel's :class:`~core.ports.Sender`, and
records the result: sent, retry later (backoff, or the provider's ``Retry-After``), or failed.
Deliveries to one target (``target_key``: a chat, a Slack channel, a mailbox, a URL) are strictly
ordered: only the oldest unfinished one is attempted, so a reply waiting out a retry holds back
the later ones; different targets go in parallel. A sender that dies mid-send is retried after
the lease: providers may then see an attempt twice, which is why senders pass their own
idempotency keys where the provider has them.

A send can outlast the lease (a reply of several messages, each call up to a provider's
timeout), so the lease is renewed every third of its length while the sender works. A claim
counts an attempt, and ``attempts`` is the lease's fencing token: renewals and the final record
apply only while the row still carries the attempt this drainer claimed, so a drainer that lost
its lease (stalled past it) cannot overwrite what the next one records.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
from collections.abc import Callable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Update, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from core.clock import Clock
from core.db import Database
from core.models import Outcome, RunRecord
from core.ports import Metrics, OwnMessage, Queued, Queueing, Sender
from core.replies import DEFAULT_FAILURE_LINE, Delivery, SendResult, reply_for
from dispatch.settings import DeliverySettings
from dispatch.tables import deliveries, runs

logger = logging.getLogger(__name__)

NO_DELIVERY_CHANNELS = frozenset({"api", "none"})


@dataclass(frozen=True, slots=True)
class ReplyWriter:
    """Turns a run that just ended into its outbox row (written with the run's completion)."""

    channels: Callable[[], frozenset[str]]
    """The channels with a sender now (channels register theirs when they start)."""
    failure_line: str = DEFAULT_FAILURE_LINE

    def row(self, run: RunRecord, outcome: Outcome, now: datetime) -> dict[str, Any] | None:
        return delivery_row(
            run, outcome, now, channels=self.channels(), failure_line=self.failure_line
        )


def delivery_row(
    run: RunRecord, outcome: Outcome, now: datetime, *, channels: frozenset[str], failure_line: str
) -> dict[str, Any] | None:
    """The outbox row for a run that just ended, or ``None`` when its answer goes nowhere."""
    target = run.reply_target or {}
    channel = str(target.get("channel", "api"))
    if channel in NO_DELIVERY_CHANNELS:
        return None
    finished = run.model_copy(
        update={
            "status": outcome.status,
            "response_status": outcome.response_status,
            "response_body": outcome.response_body,
            "response_content_type": outcome.response_content_type,
            "error": outcome.error,
            "completed_at": now,
        }
    )
    reply = reply_for(finished, failure_line=failure_line)
    sendable = channel in channels
    return {
        "run_id": run.id,
        "channel": channel,
        "target": target,
        "target_key": target_key(channel, target),
        "payload": {
            "reply": None if reply is None else reply.model_dump(mode="json"),
            "record": finished.to_api(),
        },
        "status": "pending" if sendable else "failed",
        "attempts": 0,
        "progress": 0,
        "next_attempt_at": now,
        "last_error": None if sendable else f"no sender is configured for channel {channel!r}",
        "created_at": now,
        "updated_at": now,
    }


def target_key(channel: str, target: Mapping[str, Any]) -> str:
    """What orders deliveries: one chat, channel, mailbox or URL (Slack threads share their
    channel). Email is ordered per thread only: separate mails to one mailbox have no order to
    keep, and one that a relay defers for hours must not hold back the others."""
    if channel == "email" and target.get("thread_id"):
        return f"email:{target.get('address')}:{target['thread_id']}"[:300]
    return f"{channel}:{target.get('address')}"[:300]


class OwnMessages:
    """Implements :class:`core.ports.MessageQueue`: a run's own message as its one delivery.

    ``deliveries.run_id`` is unique, so a run queues one message, and a run executed again
    (its worker died) finds the one it queued. The hourly limit is counted in the database, so
    it holds across nodes; on PostgreSQL two queueings at the same instant may both pass (read
    committed), SQLite's one writer counts exactly.
    """

    def __init__(self, database: Database, clock: Clock) -> None:
        self._db = database
        self._clock = clock

    async def queue(self, message: OwnMessage) -> Queued:
        async with self._db.write() as conn:
            own = select(runs.c.reply_target).where(runs.c.id == message.run_id)
            own_target = (await conn.execute(own)).scalar_one_or_none() or {}
            if str(own_target.get("channel", "api")) not in NO_DELIVERY_CHANNELS:
                return Queued(Queueing.HAS_REPLY_TARGET)
            wait = await self._wait(conn, message)
            if wait is not None:
                return Queued(Queueing.RATE_LIMITED, retry_after=wait)
            dialect = sqlite if conn.dialect.name == "sqlite" else postgresql
            inserted = await conn.execute(
                dialect.insert(deliveries)
                .values(**self._row(message))
                .on_conflict_do_nothing(index_elements=["run_id"])
            )
        return Queued(Queueing.QUEUED if inserted.rowcount else Queueing.ALREADY_QUEUED)

    async def _wait(self, conn: AsyncConnection, message: OwnMessage) -> int | None:
        """Seconds until the owner may queue another message, or ``None`` if it may now."""
        if message.per_hour <= 0:
            return None
        since = self._clock.now() - timedelta(hours=1)
        window = (
            select(func.count(), func.min(deliveries.c.created_at))
            .select_from(deliveries.join(runs, runs.c.id == deliveries.c.run_id))
            .where(
                runs.c.owner_id == message.owner_id,
                runs.c.service_id == message.service_id,
                deliveries.c.created_at >= since,
                deliveries.c.run_id != message.run_id,
            )
        )
        sent, oldest = (await conn.execute(window)).one()
        if sent < message.per_hour or oldest is None:
            return None
        # The oldest counted message leaves the window at oldest + 1 h = now + (oldest - since).
        left: timedelta = oldest - since
        return max(1, math.ceil(left.total_seconds()))

    def _row(self, message: OwnMessage) -> dict[str, Any]:
        now = self._clock.now()
        channel = str(message.target.get("channel"))
        return {
            "run_id": message.run_id,
            "channel": channel,
            "target": dict(message.target),
            "target_key": target_key(channel, message.target),
            "payload": {
                "reply": {
                    "text": message.text,
                    "attachments": list(message.attachments),
                    "failed": False,
                },
                "record": {"request_id": message.run_id, "service_id": message.service_id},
            },
            "status": "pending",
            "attempts": 0,
            "progress": 0,
            "next_attempt_at": now,
            "last_error": None,
            "created_at": now,
            "updated_at": now,
        }


class Outbox:
    """Drains due deliveries through the senders registered per channel."""

    def __init__(
        self,
        database: Database,
        clock: Clock,
        senders: Mapping[str, Sender],
        metrics: Metrics,
        settings: DeliverySettings,
    ) -> None:
        self._db = database
        self._clock = clock
        self._senders = senders
        self._metrics = metrics
        self._settings = settings
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def channels(self) -> frozenset[str]:
        return frozenset(self._senders)

    async def start(self, stack: AsyncExitStack) -> None:
        self._task = asyncio.create_task(self._drain_loop(), name="outbox")
        stack.push_async_callback(self.aclose)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def wake(self) -> None:
        """Something was added (a run completed): drain now rather than at the next poll."""
        self._wakeup.set()

    async def _drain_loop(self) -> None:
        while True:
            try:
                sent = await self.drain_once()
            except Exception:
                logger.exception("draining the outbox failed; trying again")
                sent = 0
            if sent:
                continue
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._settings.poll_interval):  # not wait_for: 3.11
                    await self._wakeup.wait()

    async def drain_once(self) -> int:
        """Lease and attempt every due delivery (up to a batch); returns how many were attempted."""
        claimed = await self._claim()
        await asyncio.gather(*(self._attempt(delivery) for delivery in claimed))
        return len(claimed)

    async def _attempt(self, delivery: Delivery) -> None:
        sender = self._senders[delivery.channel]
        renewing = asyncio.create_task(
            self._keep_lease(delivery), name=f"outbox-lease:{delivery.id}"
        )
        try:
            result = await sender.send(delivery)
        except Exception as exc:
            logger.exception("delivery %s (run %s): sender failed", delivery.id, delivery.run_id)
            result = SendResult.retry(f"sender error: {type(exc).__name__}: {exc}")
        finally:
            renewing.cancel()
            await asyncio.gather(renewing, return_exceptions=True)
        await self._record(delivery, result)

    async def _keep_lease(self, delivery: Delivery) -> None:
        """Extend the lease every third of its length until cancelled (the send ended)."""
        lease = self._settings.lease_seconds
        while True:
            await asyncio.sleep(lease / 3)
            try:
                async with self._db.write() as conn:
                    renewed = await conn.execute(
                        _leased(delivery).values(
                            lease_expires_at=self._clock.now() + timedelta(seconds=lease)
                        )
                    )
            except Exception:
                logger.exception("delivery %s: renewing its lease failed", delivery.id)
                continue
            if not renewed.rowcount:
                logger.warning(
                    "delivery %s (run %s): lease lost during the send; its result will not "
                    "be recorded by this attempt",
                    delivery.id,
                    delivery.run_id,
                )
                return

    async def _claim(self) -> list[Delivery]:
        """Lease due deliveries, at most one per target: the oldest unfinished one (in order)."""
        now = self._clock.now()
        heads = (
            select(func.min(deliveries.c.id))
            .where(deliveries.c.status.in_(("pending", "sending")))
            .group_by(deliveries.c.target_key)
        )
        query = (
            select(deliveries.c.id)
            .where(
                deliveries.c.channel.in_(list(self._senders)),
                or_(
                    (deliveries.c.status == "pending") & (deliveries.c.next_attempt_at <= now),
                    (deliveries.c.status == "sending") & (deliveries.c.lease_expires_at < now),
                ),
                deliveries.c.id.in_(heads),
            )
            .order_by(deliveries.c.id)
            .limit(self._settings.batch)
        )
        async with self._db.read() as conn:
            # Most polls find nothing: ask a reader before taking the write lock.
            if (await conn.execute(query.limit(1))).first() is None:
                return []
        async with self._db.write() as conn:
            if not self._db.is_sqlite:
                query = query.with_for_update(skip_locked=True)
            found = (await conn.execute(query.add_columns(deliveries.c.status))).all()
            if not found:
                return []
            ids = [row[0] for row in found]
            # Claimed while still "sending": the attempt before ended without recording.
            interrupted = {row[0] for row in found if row[1] == "sending"}
            result = await conn.execute(
                update(deliveries)
                .where(deliveries.c.id.in_(ids))
                .values(
                    status="sending",
                    attempts=deliveries.c.attempts + 1,
                    lease_expires_at=now + timedelta(seconds=self._settings.lease_seconds),
                    updated_at=now,
                )
                .returning(*deliveries.c)
            )
            rows = result.mappings().all()
        return sorted(
            (_delivery_of(row, interrupted=row["id"] in interrupted) for row in rows),
            key=lambda d: d.id,
        )

    async def _record(self, delivery: Delivery, result: SendResult) -> None:
        now = self._clock.now()
        values: dict[str, Any] = {
            "progress": max(result.progress, delivery.progress),
            "lease_expires_at": None,
            "updated_at": now,
            "last_error": result.error,
        }
        outcome = result.outcome
        if outcome == "retry" and delivery.attempts >= self._settings.max_attempts:
            outcome = "failed"
            values["last_error"] = f"gave up after {delivery.attempts} attempts: {result.error}"
        if outcome == "sent":
            values.update(status="sent", provider_id=result.provider_id)
        elif outcome == "failed":
            values.update(status="failed")
            logger.warning(
                "delivery %s (run %s) to %s failed: %s",
                delivery.id,
                delivery.run_id,
                delivery.channel,
                values["last_error"],
            )
        else:
            delay = result.retry_after
            if delay is None:
                backoff = min(2.0**delivery.attempts, self._settings.max_backoff)
                delay = backoff * random.uniform(0.8, 1.2)  # noqa: S311 - jitter, not secrecy
            values.update(status="pending", next_attempt_at=now + timedelta(seconds=delay))
        self._metrics.delivery_finished(delivery.channel, outcome)
        async with self._db.write() as conn:
            recorded = await conn.execute(_leased(delivery).values(**values))
        if not recorded.rowcount:
            logger.warning(
                "delivery %s (run %s): attempt %d ended after its lease was lost (or the "
                "delivery was settled meanwhile); its result (%s) is not recorded",
                delivery.id,
                delivery.run_id,
                delivery.attempts,
                outcome,
            )


def _leased(delivery: Delivery) -> Update:
    """An update of ``delivery`` that matches only while this attempt's lease holds."""
    return update(deliveries).where(
        deliveries.c.id == delivery.id,
        deliveries.c.status == "sending",
        deliveries.c.attempts == delivery.attempts,
    )


def _delivery_of(row: Any, *, interrupted: bool = False) -> Delivery:
    payload = row["payload"] or {}
    return Delivery.model_validate(
        {
            "id": row["id"],
            "run_id": row["run_id"],
            "channel": row["channel"],
            "target": row["target"],
            "reply": payload.get("reply"),
            "record": payload.get("record") or {},
            "attempts": row["attempts"],
            "progress": row["progress"],
            "interrupted": interrupted,
        }
    )
