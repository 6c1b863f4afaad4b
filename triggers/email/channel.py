"""The ``email`` channel (``core.channels.Channel``): its edges, processors, sender and built-in.

Edges: the SMTP listener (``smtp.py``: the MX ``smtp_port`` and ``submission_port``, started by
:meth:`EmailChannel.start` where the node listens) and the webhooks sub-application mounted at
``/email`` (``webhooks.py``); both write to the inbox through ``edge.MailEdge``.
Processors: ``email:smtp``, ``email:mailgun``, ``email:sendgrid`` (``process.py``). Sender: the
threaded reply (``sender.py``, ``render.py``). The ``send_email`` built-in
(``send_email.py``) is built by the composition root, which hands it the outbox's port.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from contextlib import AsyncExitStack
from pathlib import Path

from aiohttp import web

from core.clock import Clock
from core.db import Database
from core.inbox import EventProcessor, Inbox, TriggerHealth
from core.models import RunRecord
from triggers.email.edge import MailEdge
from triggers.email.process import VIAS, EmailProcessor
from triggers.email.sender import EmailSender, mail_domain, mail_transport
from triggers.email.settings import EmailSettings
from triggers.email.smtp import start_smtp_servers
from triggers.email.threads import ThreadStore
from triggers.email.webhooks import EmailWebhooks
from triggers.files import FileStore

logger = logging.getLogger(__name__)


class EmailChannel:
    """Every node sends (the sender, ``send_email``) and may process; a node with ``inbox``
    has the webhooks edge, and with ``listen`` too the SMTP listener (the web role)."""

    name = "email"
    prefix = "/email"

    def __init__(
        self,
        settings: EmailSettings,
        *,
        database: Database,
        clock: Clock,
        files: FileStore,
        data_dir: Path,
        delivery_attempts: int,
        inbox: Inbox | None = None,
        listen: bool = False,
    ) -> None:
        """``delivery_attempts``: the outbox's; email retries are paced to fit ``retry_hours``."""
        self._settings = settings
        self._clock = clock
        self._threads = ThreadStore(database, clock)
        self._edge = None if inbox is None else MailEdge(settings, inbox)
        self._listen = listen
        self._servers: list[asyncio.Server] = []
        self.sender = EmailSender(
            settings,
            mail_transport(settings, data_dir),
            self._threads,
            files,
            clock,
            max_attempts=delivery_attempts,
        )
        self.processors: Mapping[str, EventProcessor] = {
            f"email:{via}": EmailProcessor(
                settings, via=via, files=files, threads=self._threads, clock=clock
            )
            for via in VIAS
        }

    def edge(self) -> web.Application | None:
        if self._edge is None:
            return None
        return EmailWebhooks(self._settings, self._edge, self._threads, self._clock).app()

    async def start(self, stack: AsyncExitStack) -> None:
        if self._edge is None or not self._listen:
            return
        self._servers = await start_smtp_servers(
            self._edge, self._settings, hostname=mail_domain(self._settings)
        )
        stack.push_async_callback(self._close)
        for address in self.listening():
            logger.info("SMTP intake listening on %s", address)

    async def _close(self) -> None:
        for server in self._servers:
            server.close()
            await server.wait_closed()
        self._servers = []

    def listening(self) -> list[str]:
        return [str(s.getsockname()) for server in self._servers for s in server.sockets]

    def run_started(self, run: RunRecord) -> None:
        """Mail shows nothing while a run works."""

    async def health(self, trigger: TriggerHealth) -> Mapping[str, object]:
        if trigger.name == "email:smtp" and self._servers:
            return {"listening": self.listening()}
        return {}
