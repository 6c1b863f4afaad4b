"""The intake before the inbox: runs submitted at once (goes once the channel is wired)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from core.clock import Clock
from core.db import Database
from core.ports import RunGateway
from triggers.email.intake import EmailIntake
from triggers.email.sender import mail_domain
from triggers.email.settings import EmailSettings
from triggers.email.smtp import start_smtp_servers
from triggers.email.threads import ThreadStore
from triggers.email.webhooks import EmailWebhooks, WebhookParts
from triggers.files import FileStore

__all__ = ["EmailWebhooks", "email_intake"]

logger = logging.getLogger(__name__)


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
    threads = ThreadStore(database, clock)
    intake = EmailIntake(settings, gateway, files, threads, clock)
    servers = await start_smtp_servers(intake, settings, hostname=mail_domain(settings))
    for server in servers:
        bound = ", ".join(str(s.getsockname()) for s in server.sockets)
        logger.info("SMTP intake listening on %s", bound)
    try:
        yield EmailWebhooks(settings, WebhookParts(intake, threads, clock))
    finally:
        for server in servers:
            server.close()
            await server.wait_closed()
