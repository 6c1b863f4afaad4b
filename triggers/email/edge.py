"""The email ack path shared by the SMTP listener and the webhooks (issue 12, PROTOCOLS §3).

:meth:`MailEdge.accept` takes the raw mail and its envelope, applies what can be decided from the
envelope and the header block (our recipient, the size and MIME limits, a route's sender
allowlist and DMARC rule), computes the two keys and writes the mail to the inbox; the caller
acknowledges (SMTP 250, HTTP 200) once it returns. Parsing, loop rules, threading and
attachments happen later, in :mod:`triggers.email.process`. Any exception means "not stored":
the caller asks the sender to try again.

Keys: the dedupe key is ``email:`` + the Message-ID (none without one: the processor's
content id still makes one run per mail), shared by the three triggers so a mail that comes in
twice, by any way, is one event; the ordering key is the thread root the headers name.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from core.inbox import ArrivingEvent, Inbox
from triggers.email.authentication import authenticated_from, sender_allowed, topmost_results
from triggers.email.headers import MailHead, content_id, mime_shape, read_head
from triggers.email.loops import Disposition, loop_verdict
from triggers.email.parse import MAX_MIME_DEPTH
from triggers.email.routing import RouteMatch, Router
from triggers.email.settings import EmailSettings

logger = logging.getLogger(__name__)

KEY_LIMIT = 300
"""Longest dedupe and ordering key stored (a Message-ID has no length limit of its own)."""


class AdmissionState(StrEnum):
    """How the edge answered one mail (SMTP or a webhook)."""

    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    DROPPED = "dropped"
    REJECTED = "rejected"


@dataclass(frozen=True, slots=True)
class Admission:
    """What the edge tells the sender: an SMTP reply line for a refusal, else the event."""

    outcome: AdmissionState
    reason: str = ""
    id: str | None = None
    """The inbox event (or, through the old intake, the run)."""

    @property
    def rejected(self) -> bool:
        return self.outcome is AdmissionState.REJECTED


@dataclass(frozen=True, slots=True)
class Envelope:
    """The SMTP envelope (or what a provider's webhook says it was)."""

    mail_from: str | None
    """``""`` for the null sender ``<>``; ``None`` when the source did not say."""
    recipients: Sequence[str]
    via: str
    """``smtp`` | ``mailgun`` | ``sendgrid`` | ``imap:<mailbox>``: the trigger is
    ``email:<via>``."""
    peer: str | None = None
    """The SMTP client's IP (``smtp`` only): decides whose Authentication-Results count."""

    def headers(self) -> dict[str, str]:
        """The envelope as the stored event's headers (what processing needs of it)."""
        stored = {"rcpt-to": "\n".join(self.recipients)}
        if self.mail_from is not None:
            stored["mail-from"] = self.mail_from
        if self.peer is not None:
            stored["peer"] = self.peer
        return stored

    @classmethod
    def of(cls, via: str, headers: Mapping[str, str]) -> Envelope:
        recipients = headers.get("rcpt-to", "")
        return cls(
            mail_from=headers.get("mail-from"),
            recipients=[r for r in recipients.split("\n") if r],
            via=via,
            peer=headers.get("peer"),
        )


class MailIntake(Protocol):
    """What the SMTP handler and the webhooks need of the ack path."""

    @property
    def router(self) -> Router: ...

    async def accept(self, raw: bytes, envelope: Envelope) -> Admission: ...


class MailEdge:
    """Implements :class:`MailIntake` over the inbox."""

    def __init__(self, settings: EmailSettings, inbox: Inbox) -> None:
        self._settings = settings
        self._inbox = inbox
        self.router = Router(settings)

    async def accept(
        self, raw: bytes, envelope: Envelope, *, fallback_key: str | None = None
    ) -> Admission:
        """``fallback_key`` dedupes a mail without a Message-ID (an IMAP mailbox's UID)."""
        head = read_head(raw)
        route = first_route(self.router, envelope.recipients, head)
        if route is None:
            return Admission(AdmissionState.REJECTED, "550 5.1.1 no such recipient here")
        shape = mime_shape(raw, max_depth=MAX_MIME_DEPTH)
        if shape.depth > MAX_MIME_DEPTH:
            # Permanent (5xx): a 451 would have the sending MTA retry this mail for days.
            return Admission(
                AdmissionState.REJECTED,
                f"554 5.6.0 MIME parts nested deeper than {MAX_MIME_DEPTH} levels",
            )
        limit = self._settings.max_attachments
        if shape.attachments > limit:
            logger.info("email %s refused: %d attachments", head.message_id, shape.attachments)
            return Admission(
                AdmissionState.REJECTED, f"552 5.3.4 too many attachments (limit {limit})"
            )
        verdict = loop_verdict(head, envelope.mail_from, self.router.is_own_address)
        if verdict.disposition is not Disposition.DROP:  # a bounce is taken, never refused
            refusal = sender_refusal(self._settings, head, route, envelope)
            if refusal is not None:
                logger.info("email %s refused: %s", head.message_id, refusal)
                return Admission(AdmissionState.REJECTED, refusal)
        root = head.thread_root or content_id(envelope.mail_from, envelope.recipients, raw)
        accepted = await self._inbox.accept(
            ArrivingEvent(
                trigger=f"email:{envelope.via}",
                ordering_key=f"email:{root}"[:KEY_LIMIT],
                body=raw,
                dedupe_key=f"email:{head.message_id}"[:KEY_LIMIT]
                if head.message_id
                else fallback_key,
                headers=envelope.headers(),
            )
        )
        outcome = AdmissionState.DUPLICATE if accepted.duplicate else AdmissionState.ACCEPTED
        return Admission(outcome, id=accepted.id)


def first_route(
    router: Router, recipients: Sequence[str], head: MailHead | None
) -> RouteMatch | None:
    """One run per mail: the first of our recipients decides (envelope first, then headers)."""
    addresses = [*recipients, *(head.to if head else ()), *(head.cc if head else ())]
    for address in addresses:
        match = router.route(address)
        if match is not None:
            return match
    return None


def sender_refusal(
    settings: EmailSettings, head: MailHead, route: RouteMatch, envelope: Envelope
) -> str | None:
    """The SMTP reply refusing a sender the route does not take (PROTOCOLS §3.9), or ``None``."""
    if not sender_allowed(head.from_address, route.allow_senders):
        return f"550 5.7.1 {head.from_address or 'this sender'} may not write to this address"
    if route.require_dmarc and not authenticated_from(
        trusted_results(settings, head, envelope),
        head.from_address,
        settings.trusted_authserv_id,
    ):
        return "550 5.7.1 this address takes only mail with a DMARC or aligned DKIM pass"
    return None


def trusted_results(settings: EmailSettings, head: MailHead, envelope: Envelope) -> list[str]:
    """The Authentication-Results we believe (RFC 8601 §5; see ``authentication``): on the SMTP
    port only from a trusted relay, and only the block it prepended; through a webhook (signed
    by the provider, which is the border MTA) the provider's block."""
    if envelope.via == "smtp" and not settings.is_trusted_relay(envelope.peer):
        return []
    return topmost_results(head.fields(), settings.trusted_authserv_id)
