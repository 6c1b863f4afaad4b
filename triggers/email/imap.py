"""IMAP mailboxes as email intakes (trigger ``email:imap:<name>``; PROTOCOLS §3b).

A :class:`MailboxReader` per ``[[email.mailboxes]]`` runs on every node with the web role, but
only the one holding the mailbox's lock (``core.locks``: one connection per mailbox in the
cluster, as servers cap connections per user) connects; the others stand by and take over
when the holder dies. Holding it: log in, select the folder, take every message after the last
UID taken (all of them, or the unseen ones when flagging with ``\\Seen``, after a UIDVALIDITY
change), then IDLE (RFC 2177; re-issued every ``HEARTBEAT_SECONDS``, well before 29 minutes) or
poll every ``poll_seconds`` where the server has no IDLE. Each message: ``BODY.PEEK[]``, written
to the inbox through the same :class:`~triggers.email.edge.MailEdge` as SMTP mail (dedupe on the
Message-ID across SMTP, webhooks and IMAP; on mailbox+UIDVALIDITY+UID without one), and only
after that commit flagged or moved, then its UID recorded: a crash or a cut anywhere fetches
the message again and the inbox makes nothing twice. A failure reconnects with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable

from aioimaplib import AioImapException

from core.locks import LockLost, NamedLock
from triggers.email.edge import Envelope, MailEdge
from triggers.email.imap_client import ImapError, ImapSession
from triggers.email.mailbox_settings import MailboxSettings
from triggers.email.mailbox_state import HEARTBEAT_SECONDS, MailboxState
from triggers.email.settings import EmailRoute, EmailSettings

logger = logging.getLogger(__name__)

STANDBY_SECONDS = 1.0
"""How often a node not holding the mailbox tries to take its lock."""
MAX_BACKOFF = 60.0
BATCH = 50
"""UIDs fetched, committed and flagged together (one round trip each, one group commit)."""
BATCH_BYTES = 32 * 1024 * 1024
"""Bytes of mail one fetch holds in memory at most."""

PasswordOf = Callable[[MailboxSettings], Awaitable[str]]
"""The mailbox's password: ``password``, or its ``password_secret`` read from the store."""


def settings_for(email: EmailSettings, mailbox: MailboxSettings) -> EmailSettings:
    """``[email]`` as the mailbox's mail sees it: its address is ours (taken, never answered as
    a stranger: loop rules), routed to the mailbox's ``workflow`` when it names one."""
    address = mailbox.mail_address or ""
    routes = email.routes
    if mailbox.workflow and not any(route.address == address for route in routes):
        routes = (*routes, EmailRoute(address=address, workflow=mailbox.workflow))
    return email.model_copy(update={"addresses": (*email.addresses, address), "routes": routes})


class MailboxReader:
    """Stand by, hold, read, reconnect: one mailbox, until :meth:`aclose`."""

    def __init__(
        self,
        settings: MailboxSettings,
        *,
        edge: MailEdge,
        state: MailboxState,
        lock: NamedLock,
        password: PasswordOf,
        max_size: int,
    ) -> None:
        self._settings = settings
        self._edge = edge
        self._state = state
        self._lock = lock
        self._password = password
        self._max_size = max_size
        self._holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._task: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        return self._settings.name

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"imap:{self.name}")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        known = False
        while True:
            try:
                if not known:  # the row health reads, there from the first start
                    await self._state.position(self.name)
                    known = True
                if await self._lock.try_acquire():
                    try:
                        await self._hold()
                    finally:
                        await self._lock.release()
                        with contextlib.suppress(Exception):
                            await self._state.let_go(self.name, self._holder)
            except asyncio.CancelledError:
                raise
            except LockLost as exc:
                logger.warning("imap %s: lock lost (%s); standing by", self.name, exc)
            except Exception:
                logger.exception("imap %s: unexpected error; standing by", self.name)
            await asyncio.sleep(STANDBY_SECONDS)

    async def _hold(self) -> None:
        """Read the mailbox while the lock holds (its loss cancels the reading)."""
        logger.info("imap %s: this node holds the mailbox", self.name)
        async with asyncio.TaskGroup() as group:
            group.create_task(self._keep_lock())
            group.create_task(self._read_forever())

    async def _keep_lock(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS / 3)
            await self._lock.check()  # raises LockLost: the group cancels the reading

    async def _read_forever(self) -> None:
        backoff = 1.0
        while True:
            session: ImapSession | None = None
            try:
                session, folder = await ImapSession.open(
                    self._settings, await self._password(self._settings)
                )
                await self._state.connected(self.name, self._holder)
                logger.info("imap %s: connected to %s", self.name, self._settings.host)
                backoff = 1.0
                await self._follow(session, folder.uid_validity)
            except asyncio.CancelledError:
                raise
            except (ImapError, OSError, TimeoutError, AioImapException) as exc:
                await self._failed(exc, backoff)
            except Exception as exc:  # the inbox or the database: the mail is fetched again
                logger.exception("imap %s: taking mail failed", self.name)
                await self._failed(exc, backoff)
            finally:
                if session is not None:
                    await session.close()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)

    async def _failed(self, exc: Exception, backoff: float) -> None:
        error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        logger.warning("imap %s: %s; reconnecting in %.0f s", self.name, error, backoff)
        with contextlib.suppress(Exception):  # the database may be what failed
            await self._state.failed(self.name, error)

    async def _follow(self, session: ImapSession, uid_validity: int) -> None:
        position = await self._state.position(self.name)
        last_uid = position.last_uid
        rescan = position.uid_validity != uid_validity
        if rescan:
            if position.uid_validity is not None:
                logger.warning(
                    "imap %s: UIDVALIDITY %s -> %s; rescanning (Message-ID dedupe)",
                    self.name,
                    position.uid_validity,
                    uid_validity,
                )
            await self._state.restart_at(self.name, uid_validity)
            last_uid = 0
        if self._settings.processed_folder is not None:
            await session.ensure_folder(self._settings.processed_folder)
        # Flagging leaves read mail in the folder: on a fresh start take only the unseen.
        unseen_only = rescan and self._settings.processed_folder is None
        while True:
            uids = await session.uids_after(last_uid, unseen_only=unseen_only)
            for batch, too_big in await self._batches(session, uids):
                await self._take(session, uid_validity, batch, too_big=too_big)
                last_uid = batch[-1]
            unseen_only = False
            await self._state.alive(self.name, self._holder)
            if session.can_idle:
                await session.idle(HEARTBEAT_SECONDS)
            else:
                await asyncio.sleep(self._settings.poll_seconds)
                await session.noop()

    async def _batches(self, session: ImapSession, uids: list[int]) -> list[tuple[list[int], bool]]:
        """``uids`` in fetches of at most :data:`BATCH` mails and :data:`BATCH_BYTES` (one
        mail bigger than that alone); mails over ``max_size`` alone, never fetched."""
        batches: list[tuple[list[int], bool]] = []
        for start in range(0, len(uids), BATCH):
            chunk = uids[start : start + BATCH]
            sizes = await session.sizes(chunk)
            batch: list[int] = []
            total = 0
            for uid in chunk:
                size = sizes.get(uid, 0)
                too_big = size > self._max_size
                if batch and (too_big or total + size > BATCH_BYTES):
                    batches.append((batch, False))
                    batch, total = [], 0
                if too_big:
                    batches.append(([uid], True))
                    continue
                batch.append(uid)
                total += size
            if batch:
                batches.append((batch, False))
        return batches

    async def _take(
        self, session: ImapSession, uid_validity: int, uids: list[int], *, too_big: bool
    ) -> None:
        """Fetch, commit each to the inbox (in UID order: the arrival order per thread), and
        only then flag or move them all and record the last UID."""
        if too_big:
            # As SMTP would answer 552: never taken; marked so it is not read again.
            logger.info("imap %s: UID %d refused: over max_size", self.name, uids[0])
        else:
            raws = await session.fetch(uids)
            # Started in order, so the inbox's group commit stores them in order.
            await asyncio.gather(
                *(self._accept(uid_validity, uid, raws[uid]) for uid in uids if uid in raws)
            )
        await session.done_with(uids)
        await self._state.took(self.name, uids[-1])

    async def _accept(self, uid_validity: int, uid: int, raw: bytes) -> None:
        admission = await self._edge.accept(
            raw,
            Envelope(
                mail_from=None,
                recipients=[self._settings.mail_address or ""],
                via=f"imap:{self.name}",
            ),
            fallback_key=f"imap:{self.name}:{uid_validity}:{uid}",
        )
        if admission.rejected:
            # As SMTP would answer 5xx: never taken; marked so it is not read again.
            logger.info("imap %s: UID %d refused: %s", self.name, uid, admission.reason)
