"""The ``email`` channel (``core.channels.Channel``): its edges, processors and sender.

Edges: the webhooks sub-application mounted at ``/email`` (``webhooks.py``), the SMTP
listener (``smtp.py``: the MX ``smtp_port`` and ``submission_port``) and the IMAP mailbox
readers (``imap.py``, one connection per mailbox in the cluster) that :meth:`start` opens where
the node listens (the web role); all write to the inbox through ``edge.MailEdge``. Processors:
``email:smtp``, ``email:mailgun``, ``email:sendgrid``, ``email:imap:<mailbox>`` (``process.py``).
Sender: the threaded reply (``sender.py``, ``render.py``). The ``send_email`` built-in
(``send_email.py``) is built by the composition root, which hands it the outbox's port.

Built with the server, before the services run (the sub-application must be mounted before the
server starts): ``deps`` gives the running services' parts, asked for when the processors, the
sender or :meth:`EmailChannel.start` are first used.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from core.clock import Clock
from core.db import Database
from core.errors import SwitchboardError
from core.inbox import EventProcessor, Inbox, TriggerHealth
from core.locks import named_lock
from core.models import RunRecord
from core.ports import SecretValues, Sender
from triggers.email.edge import MailEdge
from triggers.email.imap import MailboxReader, settings_for
from triggers.email.imap_client import ImapError
from triggers.email.mailbox_settings import MailboxSettings
from triggers.email.mailbox_state import MailboxState
from triggers.email.process import VIAS, EmailProcessor
from triggers.email.sender import EmailSender, mail_domain, mail_transport
from triggers.email.settings import EmailSettings
from triggers.email.smtp import start_smtp_servers
from triggers.email.threads import ThreadStore
from triggers.email.webhooks import EmailWebhooks, WebhookParts
from triggers.files import FileStore

logger = logging.getLogger(__name__)

TRIGGERS = tuple(f"email:{via}" for via in VIAS)


def email_triggers(settings: EmailSettings) -> list[str]:
    """Every trigger of the channel: the fixed three and one per ``[[email.mailboxes]]``."""
    return [*TRIGGERS, *(mailbox.trigger for mailbox in settings.mailboxes)]


@dataclass(frozen=True, slots=True)
class EmailDeps:
    """What the channel takes from the running services."""

    database: Database
    clock: Clock
    files: FileStore
    """where attachments are stored and reply attachments read from"""
    inbox: Inbox
    data_dir: Path
    """the Maildir outbox ``<data_dir>/outbox`` when no relay is set"""
    delivery_attempts: int
    """the outbox's ``[delivery] max_attempts``: email retries are paced to fit ``retry_hours``"""
    secrets: SecretValues
    """where a mailbox's ``password_secret`` is read (a secret of ``[email] owner``)"""


@dataclass(frozen=True, slots=True)
class _Started:
    sender: EmailSender
    processors: Mapping[str, EventProcessor]
    edge: MailEdge
    mailbox_edges: Mapping[str, MailEdge]
    mailboxes: MailboxState


class EmailChannel:
    """Every node sends and may process; ``listen`` (the web role) opens the SMTP ports."""

    name = "email"
    prefix = "/email"

    def __init__(
        self, settings: EmailSettings, deps: Callable[[], EmailDeps], *, listen: bool
    ) -> None:
        self._settings = settings
        self._deps = deps
        self._listen = listen
        self._webhooks = EmailWebhooks(settings)
        self._started: _Started | None = None
        self._servers: list[asyncio.Server] = []
        self.readers: list[MailboxReader] = []

    def edge(self) -> web.Application:
        return self._webhooks.app()

    @property
    def processors(self) -> Mapping[str, EventProcessor]:
        return self._running.processors

    @property
    def sender(self) -> Sender | None:
        return self._running.sender

    @property
    def email_sender(self) -> EmailSender:
        """The sender with its email-only parts (tests hand it a delivery directly)."""
        return self._running.sender

    @property
    def _running(self) -> _Started:
        """Built on first use, from ``deps`` (which must answer by then)."""
        if self._started is None:
            self._started = self._build()
        return self._started

    def _build(self) -> _Started:
        deps = self._deps()
        settings = self._settings
        threads = ThreadStore(deps.database, deps.clock)
        sender = EmailSender(
            settings,
            mail_transport(settings, deps.data_dir),
            threads,
            deps.files,
            deps.clock,
            max_attempts=deps.delivery_attempts,
        )
        processors = {
            f"email:{via}": EmailProcessor(
                settings, via=via, files=deps.files, threads=threads, clock=deps.clock
            )
            for via in VIAS
        }
        mailbox_edges = {}
        for mailbox in settings.mailboxes:
            # The mailbox's address is one of ours: its mail runs what mail to it over SMTP would.
            own = settings_for(settings, mailbox)
            processors[mailbox.trigger] = EmailProcessor(
                own, via=f"imap:{mailbox.name}", files=deps.files, threads=threads, clock=deps.clock
            )
            mailbox_edges[mailbox.name] = MailEdge(own, deps.inbox)
        edge = MailEdge(settings, deps.inbox)
        self._webhooks.bind(WebhookParts(edge, threads, deps.clock))
        state = MailboxState(deps.database, deps.clock)
        return _Started(sender, processors, edge, mailbox_edges, state)

    async def start(self, stack: AsyncExitStack) -> None:
        """Opens the SMTP ports and starts the mailbox readers where the node listens (their
        teardown on ``stack``)."""
        running = self._running
        if not self._listen:
            return
        self._servers = await start_smtp_servers(
            running.edge, self._settings, hostname=mail_domain(self._settings)
        )
        stack.push_async_callback(self._close)
        for address in self.listening():
            logger.info("SMTP intake listening on %s", address)
        deps = self._deps()
        for mailbox in self._settings.mailboxes:
            reader = MailboxReader(
                mailbox,
                edge=running.mailbox_edges[mailbox.name],
                state=running.mailboxes,
                lock=named_lock(deps.database, f"imap-{mailbox.name}"),
                password=self._password_of,
                max_size=self._settings.max_size,
            )
            reader.start()
            stack.push_async_callback(reader.aclose)
            self.readers.append(reader)

    async def _password_of(self, mailbox: MailboxSettings) -> str:
        if mailbox.password is not None:
            return mailbox.password.get_secret_value()
        name = mailbox.password_secret or ""
        owner = self._settings.owner
        try:
            values = await self._deps().secrets.values_for_run(
                owner, mailbox.workflow or "", [name]
            )
        except SwitchboardError as exc:
            raise ImapError(f"the secret {name} of {owner} cannot be read: {exc}") from exc
        if name not in values:
            raise ImapError(f"the secret {name} of {owner} is not set (switchboard secrets set)")
        return values[name]

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
        for mailbox in self._settings.mailboxes:
            if trigger.name == mailbox.trigger:
                return await self._running.mailboxes.health(
                    mailbox.name,
                    failing_after=mailbox.failing_after,
                    poll_seconds=mailbox.poll_seconds,
                )
        return {}
