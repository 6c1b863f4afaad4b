"""The SMTP intake server (PROTOCOLS §3.2): aiosmtpd's ``SMTP`` protocol on the service's own
event loop (``loop.create_server``, not the threaded ``Controller``), so the handler shares the
database pool and the gateway with the rest of the process.

Two ports: ``smtp_port`` is the MX (other people's mail, never AUTH, optional STARTTLS) and
``submission_port`` (587) takes mail only after STARTTLS and AUTH with the configured login.
Both run the same intake: a submission port is a way in, not a relay.

Envelope rules: ``RCPT TO`` outside our domains/addresses/routes → ``550`` (never an open relay);
past :data:`MAX_RECIPIENTS` → ``452`` (RFC 5321 §4.5.3.1.10; the MTA sends the rest later); a
``MAIL FROM`` that is not UTF-8 → ``553``; over ``max_size`` → ``552`` (advertised as ``SIZE``);
more than ``max_attachments`` → ``552``, MIME nested too deep → ``554``; ``250`` only once the
mail is in the inbox; any internal failure → ``451 4.3.0`` so the sending MTA
tries again (an exception escaping a hook would otherwise become aiosmtpd's permanent ``500``).
Mail that can never be accepted gets a 5xx: a 4xx would have the sender retry it for days.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import ssl
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from triggers.email.edge import Envelope as MailEnvelope
from triggers.email.edge import MailIntake
from triggers.email.settings import EmailSettings

logger = logging.getLogger(__name__)

TRY_AGAIN = "451 4.3.0 Temporary failure storing the message; please try again later"
MAX_RECIPIENTS = 100
"""RCPT TOs per mail: the least RFC 5321 §4.5.3.1.8 lets a server take. One mail makes one run
(the first of our recipients decides), so more only costs us; the rest get ``452``."""


class SmtpIntakeHandler:
    """aiosmtpd handler hooks: recipient check, then hand the whole mail to the intake."""

    def __init__(self, intake: MailIntake, max_size: int) -> None:
        self._intake = intake
        self._max_size = max_size

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        if not _is_utf8(address):
            return "553 5.1.7 the sender address is not valid UTF-8"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if not _is_utf8(address):
            return "553 5.1.3 the recipient address is not valid UTF-8"
        if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
            return f"452 4.5.3 Too many recipients (limit {MAX_RECIPIENTS} per mail)"
        if self._intake.router.route(address) is None:
            return f"550 5.1.1 <{address}>: no such recipient here (we do not relay)"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content
        if raw is None:
            content = envelope.content
            raw = content.encode() if isinstance(content, str) else (content or b"")
        if len(raw) > self._max_size:
            return "552 5.3.4 Message too big for this system"
        mail_from = envelope.mail_from or ""
        peer = session.peer[0] if isinstance(session.peer, tuple) else None
        try:
            result = await self._intake.accept(
                raw,
                MailEnvelope(
                    mail_from="" if mail_from == "<>" else mail_from,
                    recipients=list(envelope.rcpt_tos),
                    via="smtp",
                    peer=str(peer) if peer is not None else None,
                ),
            )
        except Exception:
            logger.exception("storing a mail from %s failed; asked the sender to retry", mail_from)
            return TRY_AGAIN
        if result.rejected:
            return result.reason
        return f"250 2.0.0 Message accepted ({result.outcome.value})"

    async def handle_exception(self, error: Exception) -> str:
        logger.error("SMTP session error: %s: %s", type(error).__name__, error)
        return TRY_AGAIN


def _is_utf8(address: str) -> bool:
    """aiosmtpd decodes arguments with ``surrogateescape``: bytes that are not UTF-8 remain as
    lone surrogates, which nothing downstream (the database, our digests) can encode."""
    try:
        address.encode()
    except UnicodeEncodeError:
        return False
    return True


def tls_context(settings: EmailSettings) -> ssl.SSLContext | None:
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(settings.tls_cert), str(settings.tls_key))
    return context


def password_check(settings: EmailSettings) -> Any:
    """An aiosmtpd authenticator for the one configured user (AUTH PLAIN/LOGIN), or ``None``."""
    if settings.auth_username is None or settings.auth_password is None:
        return None
    user = settings.auth_username.encode()
    password = settings.auth_password.get_secret_value().encode()

    def authenticate(
        server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        if isinstance(auth_data, LoginPassword):
            good = hmac.compare_digest(auth_data.login, user) & hmac.compare_digest(
                auth_data.password, password
            )
            if good:
                return AuthResult(success=True)
        return AuthResult(success=False, handled=False)

    return authenticate


async def start_smtp_servers(
    intake: MailIntake, settings: EmailSettings, *, hostname: str
) -> list[asyncio.Server]:
    """Listen on ``smtp_port`` (MX) and ``submission_port`` where set, on ``smtp_host``; close
    each with ``close()`` + ``wait_closed()``."""
    loop = asyncio.get_running_loop()
    handler = SmtpIntakeHandler(intake, settings.max_size)
    context = tls_context(settings)
    authenticator = password_check(settings)

    def protocol(*, submission: bool) -> SMTP:
        return SMTP(
            handler,
            hostname=hostname,
            ident="Switchboard ESMTP",
            data_size_limit=settings.max_size,
            enable_SMTPUTF8=True,
            tls_context=context,
            require_starttls=submission,
            authenticator=authenticator if submission else None,
            auth_required=submission,
            loop=loop,
        )

    servers: list[asyncio.Server] = []
    try:
        if settings.smtp_port is not None:
            servers.append(
                await loop.create_server(
                    lambda: protocol(submission=False),
                    host=settings.smtp_host,
                    port=settings.smtp_port,
                )
            )
        if settings.submission_port is not None:
            if authenticator is None or context is None:  # the settings validator ensures both
                raise ValueError("submission_port needs tls_cert/tls_key and auth credentials")
            servers.append(
                await loop.create_server(
                    lambda: protocol(submission=True),
                    host=settings.smtp_host,
                    port=settings.submission_port,
                )
            )
    except BaseException:
        for server in servers:
            server.close()
            await server.wait_closed()
        raise
    return servers
