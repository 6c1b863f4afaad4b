"""The messages each WhatsApp delivery sent, and their status as Twilio's callbacks report it.

A status only moves forward (queued < sending < sent < delivered < read; ``failed``,
``undelivered`` and ``canceled`` are final): callbacks can arrive out of order, and a late
``sent`` must not overwrite ``read`` (PROTOCOLS §2.5). The update is one conditional statement,
so two callbacks racing on two nodes settle on the higher status.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, update

from core.clock import Clock
from core.db import Database
from core.tables import whatsapp_messages

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


class MessageLog:
    """Rows of ``whatsapp_messages``: one per message Twilio accepted for a delivery."""

    def __init__(self, database: Database, clock: Clock) -> None:
        self._db = database
        self._clock = clock

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
        """Record a status callback; ``False`` when the message is unknown or already further."""
        rank = STATUS_RANK.get(status)
        if rank is None:
            return False
        values: dict[str, Any] = {
            "status": status,
            "status_rank": rank,
            "updated_at": self._clock.now(),
        }
        if error_code:
            values["error_code"] = error_code[:16]
        async with self._db.write() as conn:
            result = await conn.execute(
                update(whatsapp_messages)
                .where(whatsapp_messages.c.sid == sid, whatsapp_messages.c.status_rank < rank)
                .values(**values)
            )
        return bool(result.rowcount)

    async def of_delivery(self, delivery_id: int) -> list[dict[str, Any]]:
        """The messages of one delivery in part order (for the CLI, the API and tests)."""
        async with self._db.read() as conn:
            rows = await conn.execute(
                select(whatsapp_messages)
                .where(whatsapp_messages.c.delivery_id == delivery_id)
                .order_by(whatsapp_messages.c.part, whatsapp_messages.c.created_at)
            )
            return [dict(row) for row in rows.mappings()]
