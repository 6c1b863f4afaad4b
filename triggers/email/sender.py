"""The ``email`` channel's :class:`~core.ports.Sender`: a run's reply as a threaded mail.

Mail leaves through ``[email] relay_url`` with aiosmtplib, or, with no relay (the demo), lands in
the Maildir ``<data_dir>/outbox``. The Message-ID is derived from the run (one delivery per run),
so a retried attempt sends the same id and the recipient's client shows one mail even if a relay
saw both attempts. 4xx answers and connection errors are retried by the outbox; 5xx are final.
A relay that takes the mail but defers some recipients (a 4xx to their ``RCPT``) has those retried
later, and only those: the recipients already handed over are remembered per Message-ID. Email
retries are paced to last ``[email] retry_hours`` (MTAs keep trying for days): the first few come
at the outbox's usual backoff, the rest are spread over the window (see :func:`retry_delay`).

Attachments are read from our own file store (signed download URIs, checked by signature), never
fetched over HTTP: a URL from a workflow must not make the server fetch from its own network
(SSRF). A reply attachment that is not one of our files, or too large to attach, is listed as a
link under the text instead; ``send_email`` refuses such URLs up front.
"""

from __future__ import annotations

import asyncio
import logging
import mailbox
from collections.abc import Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Protocol
from urllib.parse import parse_qs, unquote, urlsplit

import aiosmtplib
from aiosmtplib.email import extract_recipients

from core.clock import Clock
from core.errors import Forbidden, NotFound, PayloadTooLarge
from core.replies import Delivery, SendResult
from triggers.email.render import OutgoingFile, compose_mail
from triggers.email.settings import EmailSettings
from triggers.email.threads import ThreadStore
from triggers.files import FileStore

logger = logging.getLogger(__name__)

SMTP_TIMEOUT = 30.0


QUICK_RETRIES = 3
"""Email retries at the outbox's own backoff (seconds) before the pacing over the window."""


@dataclass(frozen=True, slots=True)
class Handover:
    """How handing one mail to the next hop went."""

    result: SendResult
    deferred: dict[str, str] = field(default_factory=dict)
    """In a mail the relay took: recipients it refused for now (4xx), address → its answer."""
    rejected: dict[str, str] = field(default_factory=dict)
    """In a mail the relay took: recipients it refused for good (5xx)."""


class MailTransport(Protocol):
    """Hands one composed mail to the next hop for ``recipients``; one attempt per call."""

    async def deliver(self, message: EmailMessage, recipients: Sequence[str]) -> Handover: ...


@dataclass(frozen=True, slots=True)
class SmtpRelay:
    """An SMTP relay (``smtp://``, optional STARTTLS; ``smtps://``); credentials never logged."""

    hostname: str
    port: int
    use_tls: bool
    start_tls: bool | None
    username: str | None
    password: str | None
    cert_bundle: str | None = None

    @classmethod
    def from_settings(cls, settings: EmailSettings) -> SmtpRelay | None:
        if not settings.relay_url:
            return None
        url = urlsplit(settings.relay_url)
        if url.scheme not in {"smtp", "smtps"} or not url.hostname:
            raise ValueError("[email] relay_url must look like smtp://host:port or smtps://host")
        starttls = (parse_qs(url.query).get("starttls") or ["auto"])[0].lower()
        password = settings.relay_password.get_secret_value() if settings.relay_password else None
        return cls(
            hostname=url.hostname,
            port=url.port or (465 if url.scheme == "smtps" else 25),
            use_tls=url.scheme == "smtps",
            # "auto": upgrade when the relay offers STARTTLS (and then verify its certificate).
            start_tls=None
            if url.scheme == "smtps" or starttls == "auto"
            else starttls in {"required", "yes", "true", "on"},
            username=unquote(url.username) if url.username else settings.relay_username,
            password=unquote(url.password) if url.password else password,
            cert_bundle=str(settings.relay_ca_file) if settings.relay_ca_file else None,
        )

    def __repr__(self) -> str:
        return f"SmtpRelay({self.hostname}:{self.port})"

    async def deliver(self, message: EmailMessage, recipients: Sequence[str]) -> Handover:
        where = f"relay {self.hostname}:{self.port}"
        try:
            refused, _answer = await aiosmtplib.send(
                message,
                recipients=list(recipients),
                hostname=self.hostname,
                port=self.port,
                use_tls=self.use_tls,
                start_tls=False if self.use_tls else self.start_tls,
                username=self.username,
                password=self.password,
                cert_bundle=self.cert_bundle,
                timeout=SMTP_TIMEOUT,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [r.code for r in exc.recipients]
            error = f"{where} refused every recipient: " + "; ".join(
                f"{r.recipient} {r.code} {r.message}" for r in exc.recipients
            )
            if any(400 <= code < 500 for code in codes):
                return Handover(SendResult.retry(error))
            return Handover(SendResult.failed(error))
        except aiosmtplib.SMTPResponseException as exc:
            error = f"{where} answered {exc.code} {exc.message}"
            return Handover(SendResult.retry(error) if exc.code < 500 else SendResult.failed(error))
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            return Handover(SendResult.retry(f"{where} unreachable: {type(exc).__name__}: {exc}"))
        answers = {address: f"{r.code} {r.message}" for address, r in refused.items()}
        return Handover(
            SendResult.sent(str(message["Message-ID"])),
            deferred={a: text for a, text in answers.items() if refused[a].code < 500},
            rejected={a: text for a, text in answers.items() if refused[a].code >= 500},
        )


@dataclass(frozen=True, slots=True)
class MaildirOutbox:
    """No relay configured: mail is kept in a Maildir (readable with any mail client, mutt -f)."""

    path: Path

    async def deliver(self, message: EmailMessage, recipients: Sequence[str]) -> Handover:
        def add() -> None:
            mailbox.Maildir(self.path, create=True).add(message)

        await asyncio.to_thread(add)
        return Handover(SendResult.sent(str(message["Message-ID"])))


class EmailSender:
    """Implements ``core.ports.Sender`` for ``email`` reply targets."""

    def __init__(
        self,
        settings: EmailSettings,
        transport: MailTransport,
        threads: ThreadStore,
        files: FileStore,
        clock: Clock,
        *,
        max_attempts: int,
    ) -> None:
        self._settings = settings
        self._transport = transport
        self._threads = threads
        self._files = files
        self._clock = clock
        self._max_attempts = max_attempts

    def message_id_for(self, run_id: str) -> str:
        return message_id_for(run_id, self.domain)

    @property
    def domain(self) -> str:
        return mail_domain(self._settings)

    def sender_address(self, written_to: str | None = None) -> str:
        """Our From: the configured one, else the address the mail was written to."""
        if self._settings.from_address:
            return self._settings.from_address
        if written_to:
            return written_to
        return next(iter(self._settings.addresses), f"switchboard@{self.domain}")

    async def send(self, delivery: Delivery) -> SendResult:
        reply = delivery.reply
        if reply is None or (not reply.text.strip() and not reply.attachments):
            return SendResult.sent()  # the workflow chose not to answer
        details = delivery.target.get("details") or {}
        message_id = str(details.get("message_id") or self.message_id_for(delivery.run_id))
        recipient = str(delivery.target.get("address") or "")
        if "@" not in recipient:
            return SendResult.failed(f"email target {recipient!r} is not an address")
        files: list[OutgoingFile] = []
        links: list[str] = []
        room = self._settings.max_size
        for url in reply.attachments:
            try:
                stored = await self._files.read_signed(url, max_size=room, allow_expired=True)
            except (Forbidden, PayloadTooLarge) as exc:
                logger.info("run %s: attachment sent as a link: %s", delivery.run_id, exc)
                links.append(url)
                continue
            except NotFound as exc:
                return SendResult.failed(f"attachment {exc.name} is no longer stored")
            room -= len(stored.data)
            files.append(OutgoingFile(stored.filename, stored.content_type, stored.data))
        # Stored before sending: an answer to this mail may come back before we return.
        await self._threads.record(
            message_id=message_id,
            conversation_id=str(details.get("conversation_id") or message_id),
            direction="out",
            peer=recipient,
            run_id=delivery.run_id,
        )
        message = compose_mail(
            sender=self.sender_address(details.get("from")),
            target=delivery.target,
            text=with_links(reply.text, links),
            message_id=message_id,
            now=self._clock.now(),
            default_subject=f"Result of {delivery.record.get('service_id') or 'your workflow'}",
            files=files,
        )
        result = await self._hand_over(message, message_id, delivery.run_id)
        if result.outcome == "retry" and result.retry_after is None:
            window = self._settings.retry_hours * 3600
            delay = retry_delay(delivery.attempts, self._max_attempts, window)
            if delay is not None:
                result = SendResult.retry(result.error or "retry", after=delay)
        return result

    async def _hand_over(self, message: EmailMessage, message_id: str, run_id: str) -> SendResult:
        """Send to the recipients not yet handed over; remember them when some were deferred."""
        done = await self._threads.recipients_done(message_id)
        pending = [r for r in extract_recipients(message) if r.lower() not in done]
        if not pending:
            return SendResult.sent(message_id)
        handover = await self._transport.deliver(message, pending)
        for address, answer in handover.rejected.items():
            logger.warning("run %s: the relay refused %s for good: %s", run_id, address, answer)
        if handover.result.outcome != "sent" or not handover.deferred:
            return handover.result
        # Deferred recipients are tried again later; the others must not get the mail twice.
        finished = [r for r in pending if r not in handover.deferred]
        await self._threads.record_recipients(message_id, finished, run_id=run_id)
        deferred = "; ".join(f"{a} {text}" for a, text in handover.deferred.items())
        return SendResult.retry(f"the relay deferred some recipients: {deferred}")


def retry_delay(attempt: int, max_attempts: int, window: float) -> float | None:
    """Seconds until the next try after failed attempt ``attempt`` (1-based), or ``None`` for
    the outbox's own backoff. The outbox gives up after ``max_attempts``; the first
    ``QUICK_RETRIES`` retries are quick (a relay restarting), the rest double and add up to
    ``window``, so mail keeps being retried about as long as an MTA would."""
    slow = max_attempts - 1 - QUICK_RETRIES
    if attempt <= QUICK_RETRIES or slow <= 0 or attempt >= max_attempts:
        return None
    return window * 2.0 ** (attempt - QUICK_RETRIES - 1) / (2.0**slow - 1)


def with_links(text: str, links: list[str]) -> str:
    """The reply text with the attachments we did not attach listed as links under it."""
    if not links:
        return text
    listed = "\n".join(f"- <{url}>" for url in links)
    return f"{text.rstrip()}\n\nAttachments (links):\n{listed}"


def message_id_for(run_id: str, domain: str) -> str:
    """A run's mail has one Message-ID: a retried attempt (or a run executed again) reuses it."""
    return f"<{run_id}@{domain}>"


def mail_domain(settings: EmailSettings) -> str:
    """Our name: in the SMTP banner and the right-hand side of our Message-IDs."""
    if settings.hostname:
        return settings.hostname
    address = settings.from_address or next(iter(settings.addresses), "")
    domain = address.rpartition("@")[2].strip(">")
    return domain or next(iter(settings.domains), "switchboard.localhost")


def mail_transport(settings: EmailSettings, data_dir: Path) -> MailTransport:
    relay = SmtpRelay.from_settings(settings)
    if relay is not None:
        return relay
    return MaildirOutbox((data_dir / "outbox").resolve())
