"""Shared by the IMAP mailbox tests: a server reading a Dovecot user's INBOX, mails to append."""

from __future__ import annotations

import asyncio
from email.message import EmailMessage
from typing import Any

from core.inbox import TriggerHealth
from tests.conftest import Live, LiveFactory
from tests.dovecot import ImapUser
from tests.fakes.smtp_sink import SmtpSink
from tests.integration.email_helpers import mail, start_email


async def start_imap(
    live_factory: LiveFactory,
    sink: SmtpSink,
    *users: ImapUser,
    mailbox: dict[str, Any] | None = None,
    **email: Any,
) -> Live:
    """A node whose ``[[email.mailboxes]]`` read each of ``users`` (``mailbox``: overrides)."""
    boxes = [user.mailbox(**(mailbox or {})) for user in users]
    return await start_email(live_factory, sink, mailboxes=boxes, **email)


def mail_to(user: ImapUser, subject: str = "Hello", body: str = "Can you help?") -> EmailMessage:
    return mail(subject, body, to=f"{user.name}@example.test")


async def mailbox_health(live: Live, user: ImapUser) -> TriggerHealth:
    found = {t.name: t for t in await live.services.inbox.triggers()}
    return found[f"email:imap:{user.name}"]


class CuttingProxy:
    """A TCP proxy on loopback in front of Dovecot that drops the connection (both ways, the
    command not forwarded) the first time the client sends ``cut_on``."""

    def __init__(self, upstream_port: int, cut_on: bytes) -> None:
        self._upstream = upstream_port
        self._cut_on = cut_on
        self.cut = asyncio.Event()
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def __aenter__(self) -> CuttingProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._upstream)
        pumps = [
            asyncio.ensure_future(self._pump(reader, up_writer, watch=True)),
            asyncio.ensure_future(self._pump(up_reader, writer, watch=False)),
        ]
        self._tasks.update(pumps)
        await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        for pump in pumps:
            pump.cancel()
        for stream in (writer, up_writer):
            stream.close()

    async def _pump(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, *, watch: bool
    ) -> None:
        while data := await source.read(65536):
            if watch and not self.cut.is_set() and self._cut_on in data:
                self.cut.set()
                return
            sink.write(data)
            await sink.drain()
