"""The email channel's pieces, built for the composition root (``switchboard``)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from core.clock import Clock
from core.db import Database
from core.ports import BuiltinService, RunGateway
from triggers.email.intake import EmailIntake
from triggers.email.send_email import SendEmailService
from triggers.email.sender import EmailSender, mail_domain, mail_transport
from triggers.email.settings import EmailSettings
from triggers.email.smtp import start_smtp_servers
from triggers.email.threads import ThreadStore
from triggers.email.webhooks import EMAIL_ROUTES, EmailWebhooks
from triggers.files import FileStore

__all__ = ["EMAIL_ROUTES", "EmailOutbound", "EmailWebhooks", "email_intake"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class EmailOutbound:
    """The ``email`` sender and the ``send_email`` built-in (every node has both)."""

    sender: EmailSender
    builtins: dict[str, BuiltinService]

    @classmethod
    def build(
        cls,
        settings: EmailSettings,
        *,
        data_dir: Path,
        database: Database,
        clock: Clock,
        files: FileStore,
        max_attempts: int,
    ) -> EmailOutbound:
        """``max_attempts``: the outbox's; email retries are paced to fit ``retry_hours``."""
        threads = ThreadStore(database, clock)
        transport = mail_transport(settings, data_dir)
        sender = EmailSender(settings, transport, threads, files, clock, max_attempts=max_attempts)
        service = SendEmailService(
            database, clock, sender, files, per_hour=settings.send_email_per_hour
        )
        return cls(sender, {"send_email": service})


@asynccontextmanager
async def email_intake(
    settings: EmailSettings,
    *,
    gateway: RunGateway,
    files: FileStore,
    database: Database,
    clock: Clock,
) -> AsyncIterator[EmailWebhooks]:
    """The webhook handlers, and the SMTP servers (MX ``smtp_port``, ``submission_port``) that
    are configured (web role)."""
    intake = EmailIntake(settings, gateway, files, ThreadStore(database, clock), clock)
    servers = await start_smtp_servers(intake, settings, hostname=mail_domain(settings))
    for server in servers:
        bound = ", ".join(str(s.getsockname()) for s in server.sockets)
        logger.info("SMTP intake listening on %s", bound)
    try:
        yield EmailWebhooks(settings, intake, database, clock)
    finally:
        for server in servers:
            server.close()
            await server.wait_closed()
