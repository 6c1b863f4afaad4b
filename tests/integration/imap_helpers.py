"""Shared by the IMAP mailbox tests: a server reading a Dovecot user's INBOX, mails to append."""

from __future__ import annotations

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
