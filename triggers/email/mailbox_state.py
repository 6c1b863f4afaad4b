"""Where reading each IMAP mailbox stands (``email_mailboxes``), and its health for every node.

The node holding a mailbox writes here: the UIDVALIDITY and the last UID it put in the inbox
(catch-up after a restart or a fail-over starts from there), and its connection's state (kept
in the database because the node asked for health may not be the one holding the mailbox).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, literal, select, update

from core.clock import Clock
from core.db import Database, insert_unless_present
from core.tables import UTCDateTime
from triggers.email.tables import email_mailboxes

HEARTBEAT_SECONDS = 15.0
"""How often the holder writes ``seen_at``: a holder silent for three of these is gone."""


@dataclass(frozen=True, slots=True)
class MailboxPosition:
    uid_validity: int | None
    last_uid: int


class MailboxState:
    def __init__(self, database: Database, clock: Clock) -> None:
        self._db = database
        self._clock = clock

    async def position(self, name: str) -> MailboxPosition:
        async with self._db.write() as conn:
            await insert_unless_present(
                conn, email_mailboxes, {"name": name, "last_uid": 0}, unique=["name"]
            )
            row = (
                await conn.execute(
                    select(email_mailboxes.c.uid_validity, email_mailboxes.c.last_uid).where(
                        email_mailboxes.c.name == name
                    )
                )
            ).one()
        return MailboxPosition(row.uid_validity, int(row.last_uid))

    async def restart_at(self, name: str, uid_validity: int) -> None:
        """A new UIDVALIDITY (RFC 3501 §2.3.1.1): every UID taken before names nothing now."""
        await self._set(name, uid_validity=uid_validity, last_uid=0)

    async def took(self, name: str, uid: int) -> None:
        """``uid`` is in the inbox (and flagged or moved)."""
        now = self._clock.now()
        await self._set(name, last_uid=uid, last_message_at=now, seen_at=now)

    async def connected(self, name: str, holder: str) -> None:
        now = self._clock.now()
        await self._set(name, holder=holder, connected_at=now, seen_at=now, failing_since=None)

    async def alive(self, name: str, holder: str) -> None:
        await self._set(name, holder=holder, seen_at=self._clock.now())

    async def failed(self, name: str, error: str) -> None:
        """The connection failed (or never came up): kept, and the time the trouble began."""
        now = self._clock.now()
        await self._set(
            name,
            connected_at=None,
            last_error=error[:1000],
            last_error_at=now,
            failing_since=func.coalesce(
                email_mailboxes.c.failing_since, literal(now, UTCDateTime())
            ),
        )

    async def let_go(self, name: str, holder: str) -> None:
        """This node stops holding the mailbox (shutdown, lock lost)."""
        async with self._db.write() as conn:
            await conn.execute(
                update(email_mailboxes)
                .where(email_mailboxes.c.name == name, email_mailboxes.c.holder == holder)
                .values(holder=None, connected_at=None)
            )

    async def health(
        self, name: str, *, failing_after: float, poll_seconds: float
    ) -> dict[str, object]:
        """``GET /api/v1/triggers`` details: connected, since when and by which node, the last
        message taken, the last error, and whether the trouble outlasted ``failing_after``."""
        async with self._db.read() as conn:
            row = (
                (await conn.execute(select(email_mailboxes).where(email_mailboxes.c.name == name)))
                .mappings()
                .first()
            )
        if row is None:
            return {"connected": False, "failing": False}
        now = self._clock.now()
        seen: datetime | None = row["seen_at"]
        # The holder writes seen_at each IDLE round (HEARTBEAT_SECONDS) or poll.
        beat = max(HEARTBEAT_SECONDS, poll_seconds)
        alive = seen is not None and now - seen < timedelta(seconds=3 * beat)
        connected = alive and row["connected_at"] is not None and row["holder"] is not None
        since: datetime | None = row["failing_since"]
        failing = (
            not connected and since is not None and now - since >= timedelta(seconds=failing_after)
        )
        details: dict[str, Any] = {
            "connected": connected,
            "failing": failing,
            "holder": row["holder"] if connected else None,
            "connected_since": _iso(row["connected_at"]) if connected else None,
            "last_message_at": _iso(row["last_message_at"]),
            "last_mailbox_error": row["last_error"],
            "last_mailbox_error_at": _iso(row["last_error_at"]),
            "uid_validity": row["uid_validity"],
            "last_uid": row["last_uid"],
        }
        return details

    async def _set(self, name: str, **values: Any) -> None:
        async with self._db.write() as conn:
            await conn.execute(
                update(email_mailboxes).where(email_mailboxes.c.name == name).values(**values)
            )


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
