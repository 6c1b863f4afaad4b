"""Threads: the Message-IDs we received and sent, and the conversation each belongs to.

A conversation's id is the Message-ID of its root mail (DESIGN §9). A reply names its parents in
``In-Reply-To``/``References`` (RFC 5322 §3.6.4); any of them we stored continues that
conversation, even when the client trimmed ``References``. Otherwise the oldest reference (the
root, when the client kept it) or the mail's own id starts a new one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select

from core.clock import Clock
from core.db import Database, insert_unless_present
from triggers.email.tables import email_messages


class ThreadStore:
    def __init__(self, database: Database, clock: Clock) -> None:
        self._db = database
        self._clock = clock

    async def conversation_of(self, message_ids: list[str]) -> str | None:
        """The conversation of the first of ``message_ids`` we know, in the order given."""
        if not message_ids:
            return None
        query = select(email_messages.c.message_id, email_messages.c.conversation_id).where(
            email_messages.c.message_id.in_(message_ids[:100])
        )
        async with self._db.read() as conn:
            known = {row.message_id: row.conversation_id for row in await conn.execute(query)}
        return next((known[i] for i in message_ids if i in known), None)

    async def received(self, message_id: str) -> bool:
        query = select(email_messages.c.id).where(
            email_messages.c.message_id == message_id, email_messages.c.direction == "in"
        )
        async with self._db.read() as conn:
            return (await conn.execute(query)).first() is not None

    async def record(
        self,
        *,
        message_id: str,
        conversation_id: str,
        direction: str,
        peer: str,
        run_id: str | None = None,
        replied: bool = False,
    ) -> None:
        values = {
            "message_id": message_id[:300],
            "conversation_id": conversation_id[:300],
            "direction": direction,
            "peer": peer[:300],
            "run_id": run_id,
            "replied": replied,
            "created_at": self._clock.now(),
        }
        async with self._db.write() as conn:
            await insert_unless_present(conn, email_messages, values, unique=["message_id"])

    async def recipients_done(self, message_id: str) -> set[str]:
        """Recipients of our mail ``message_id`` already handed to the relay (lower case)."""
        query = select(email_messages.c.peer).where(
            email_messages.c.direction == "rcp",
            email_messages.c.conversation_id == message_id[:300],
        )
        async with self._db.read() as conn:
            return {str(peer).lower() for peer in (await conn.execute(query)).scalars()}

    async def record_recipients(
        self, message_id: str, recipients: list[str], *, run_id: str | None
    ) -> None:
        """Remember that the relay took our mail ``message_id`` for ``recipients``: a retry for
        the recipients it deferred does not send it to these again. Kept as ``rcp`` rows (the
        row key is not a Message-ID, so threading never matches it)."""
        now = self._clock.now()
        async with self._db.write() as conn:
            for recipient in recipients:
                values = {
                    "message_id": f"rcpt:{recipient.lower()}:{message_id}"[:300],
                    "conversation_id": message_id[:300],
                    "direction": "rcp",
                    "peer": recipient.lower()[:300],
                    "run_id": run_id,
                    "replied": False,
                    "created_at": now,
                }
                await insert_unless_present(conn, email_messages, values, unique=["message_id"])

    async def replies_since(self, peer: str, since: datetime, *, besides: str = "") -> int:
        """How many of ``peer``'s mails since ``since`` were answered automatically, not
        counting the mail ``besides`` (processed again: its own row must not limit it)."""
        query = select(func.count()).where(
            email_messages.c.peer == peer[:300],
            email_messages.c.direction == "in",
            email_messages.c.replied.is_(True),
            email_messages.c.created_at >= since,
            email_messages.c.message_id != besides[:300],
        )
        async with self._db.read() as conn:
            return int((await conn.execute(query)).scalar_one())

    async def replies_in_last_hour(self, peer: str, *, besides: str = "") -> int:
        since = self._clock.now() - timedelta(hours=1)
        return await self.replies_since(peer, since, besides=besides)

    async def inbound(self, message_id: str) -> Received | None:
        """What processing decided for mail ``message_id`` before (it is processed again after
        a crash or a retry: the same conversation, the same reply decision)."""
        query = select(email_messages.c.conversation_id, email_messages.c.replied).where(
            email_messages.c.message_id == message_id[:300], email_messages.c.direction == "in"
        )
        async with self._db.read() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else Received(str(row.conversation_id), bool(row.replied))

    async def seen_token(self, token: str) -> bool:
        """Whether a Mailgun post with this token was stored (a replayed request)."""
        query = select(email_messages.c.id).where(email_messages.c.message_id == _token_key(token))
        async with self._db.read() as conn:
            return (await conn.execute(query)).first() is not None

    async def remember_token(self, token: str) -> None:
        """Kept as a ``tok`` row: its key is no Message-ID, so threading never matches it."""
        values = {
            "message_id": _token_key(token),
            "conversation_id": _token_key(token),
            "direction": "tok",
            "peer": "mailgun",
            "run_id": None,
            "replied": False,
            "created_at": self._clock.now(),
        }
        async with self._db.write() as conn:
            await insert_unless_present(conn, email_messages, values, unique=["message_id"])


@dataclass(frozen=True, slots=True)
class Received:
    conversation_id: str
    replied: bool


def _token_key(token: str) -> str:
    return f"mailgun-token:{token}"[:300]
