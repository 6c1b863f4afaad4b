"""The messages each WhatsApp delivery sent, and their status as Twilio's callbacks report it.

A status only moves forward (queued < sending < sent < delivered < read; ``failed``,
``undelivered`` and ``canceled`` are final): callbacks can arrive out of order, and a late
``sent`` must not overwrite ``read`` (PROTOCOLS §2.5). The update is one conditional statement,
so two callbacks racing on two nodes settle on the higher status.

A callback can also arrive before the message is recorded (Twilio answers the create call, then
calls back, while we are still writing the part down). Such a status is kept as an inbound event
(``inbound_events``, source ``twilio-status``, key ``<sid>|<status>|<error>``) and merged, by
rank, once :meth:`MessageLog.record_sent` writes the message. Each side writes its row and then
looks for the other's in a later transaction, so whichever commits second finds the first.

A final ``failed`` or ``undelivered`` is copied onto the delivery (status ``failed``, and
``last_error`` naming the message and Twilio's ``ErrorCode``), where the API and CLI show it.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from core.clock import Clock
from core.db import Database
from core.ports import DeliveryFailures
from triggers.whatsapp.tables import inbound_events, whatsapp_messages

STATUS_RANK = {
    "accepted": 0,
    "scheduled": 0,
    "queued": 0,
    "sending": 1,
    "sent": 2,
    "delivered": 3,
    "read": 4,
    "failed": 9,
    "undelivered": 9,
    "canceled": 9,
}
FAILED_STATUSES = frozenset({"failed", "undelivered"})
EARLY_SOURCE = "twilio-status"


class MessageLog:
    """Rows of ``whatsapp_messages``: one per message Twilio accepted for a delivery."""

    def __init__(self, database: Database, clock: Clock, failures: DeliveryFailures) -> None:
        self._db = database
        self._clock = clock
        self._failures = failures

    async def record_sent(self, delivery_id: int, part: int, sid: str, status: str) -> None:
        now = self._clock.now()
        async with self._db.write() as conn:
            await conn.execute(
                whatsapp_messages.insert().values(
                    sid=sid,
                    delivery_id=delivery_id,
                    part=part,
                    status=status,
                    status_rank=STATUS_RANK.get(status, 0),
                    created_at=now,
                    updated_at=now,
                )
            )
        await self._merge_early(sid)

    async def known(self, sids: list[str]) -> set[str]:
        """Which of ``sids`` are recorded as parts of some delivery."""
        if not sids:
            return set()
        async with self._db.read() as conn:
            found = await conn.execute(
                select(whatsapp_messages.c.sid).where(whatsapp_messages.c.sid.in_(sids))
            )
            return set(found.scalars())

    async def parts_sent(self, delivery_id: int) -> int:
        """How many parts of a delivery Twilio already took (a retry resumes after them).

        Each part is recorded as soon as Twilio accepts it, so this also holds after a crash in
        the middle of a reply, when the outbox's own ``progress`` was not yet written.
        """
        async with self._db.read() as conn:
            highest = (
                await conn.execute(
                    select(func.max(whatsapp_messages.c.part)).where(
                        whatsapp_messages.c.delivery_id == delivery_id
                    )
                )
            ).scalar()
        return 0 if highest is None else int(highest) + 1

    async def apply_status(self, sid: str, status: str, error_code: str | None) -> bool:
        """Record a status callback; ``False`` when it is unknown or the message is further.

        A status for a message not recorded yet is kept and merged when it is (``True``).
        """
        rank = STATUS_RANK.get(status)
        if rank is None:
            return False
        code = error_code[:16] if error_code else None
        async with self._db.write() as conn:
            if await self._apply(conn, sid, status, rank, code):
                return True
            known = (
                await conn.execute(
                    select(whatsapp_messages.c.sid).where(whatsapp_messages.c.sid == sid)
                )
            ).first()
            if known is not None:
                return False
            dialect = sqlite if conn.dialect.name == "sqlite" else postgresql
            await conn.execute(
                dialect.insert(inbound_events)
                .values(
                    source=EARLY_SOURCE,
                    dedupe_key=f"{sid}|{status}|{code or ''}"[:300],
                    received_at=self._clock.now(),
                )
                .on_conflict_do_nothing(index_elements=["source", "dedupe_key"])
            )
        await self._merge_early(sid)  # recorded meanwhile? (see the module docstring)
        return True

    async def _apply(
        self, conn: AsyncConnection, sid: str, status: str, rank: int, code: str | None
    ) -> bool:
        values: dict[str, Any] = {
            "status": status,
            "status_rank": rank,
            "updated_at": self._clock.now(),
        }
        if code:
            values["error_code"] = code
        applied = (
            await conn.execute(
                update(whatsapp_messages)
                .where(whatsapp_messages.c.sid == sid, whatsapp_messages.c.status_rank < rank)
                .values(**values)
                .returning(whatsapp_messages.c.delivery_id, whatsapp_messages.c.part)
            )
        ).first()
        if applied is None:
            return False
        if status in FAILED_STATUSES:
            error = f"WhatsApp message {sid} (part {applied.part + 1}) {status}"
            if code:
                error += f": Twilio error {code}"
            await self._failures.mark_failed(conn, applied.delivery_id, error)
        return True

    async def _merge_early(self, sid: str) -> None:
        """Apply the statuses that arrived before ``sid`` was recorded (highest rank wins)."""
        prefix = f"{sid}|"
        async with self._db.write() as conn:
            early = (
                await conn.execute(
                    select(inbound_events.c.id, inbound_events.c.dedupe_key).where(
                        inbound_events.c.source == EARLY_SOURCE,
                        inbound_events.c.dedupe_key.startswith(prefix, autoescape=True),
                    )
                )
            ).all()
            if not early:
                return
            known = (
                await conn.execute(
                    select(whatsapp_messages.c.sid).where(whatsapp_messages.c.sid == sid)
                )
            ).first()
            if known is None:
                return
            statuses = [key.removeprefix(prefix).partition("|") for _, key in early]
            status, _, code = max(statuses, key=lambda found: STATUS_RANK.get(found[0], -1))
            if status in STATUS_RANK:
                await self._apply(conn, sid, status, STATUS_RANK[status], code or None)
            await conn.execute(
                delete(inbound_events).where(inbound_events.c.id.in_([id_ for id_, _ in early]))
            )

    async def of_delivery(self, delivery_id: int) -> list[dict[str, Any]]:
        """The messages of one delivery in part order (for the CLI, the API and tests)."""
        async with self._db.read() as conn:
            rows = await conn.execute(
                select(whatsapp_messages)
                .where(whatsapp_messages.c.delivery_id == delivery_id)
                .order_by(whatsapp_messages.c.part, whatsapp_messages.c.created_at)
            )
            return [dict(row) for row in rows.mappings()]
