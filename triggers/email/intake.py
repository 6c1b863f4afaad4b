"""Email intake: one received mail → at most one run request (DESIGN §1 step 1, §9).

Shared by the SMTP server and the inbound-parse webhooks. The run request is committed before
:meth:`EmailIntake.accept` returns, so the caller acknowledges (SMTP 250, HTTP 200) only what is
stored; any exception means "not stored" and the caller asks the sender to try again.
"""

from __future__ import annotations

import hashlib
import logging
import os
from typing import Any

from core.clock import Clock
from core.messages import Attachment, Conversation, InboundMessage, Person, run_request_for
from core.models import ReplyTarget
from core.ports import RunGateway
from triggers.email.authentication import authenticated_from, sender_allowed, topmost_results
from triggers.email.edge import Admission, Envelope, Outcome
from triggers.email.loops import Disposition, loop_verdict
from triggers.email.parse import ParsedEmail, UnreadableMail, parse_email
from triggers.email.routing import RouteMatch, Router
from triggers.email.settings import EmailSettings
from triggers.email.threads import ThreadStore
from triggers.files import FileStore, Incoming

logger = logging.getLogger(__name__)


class EmailIntake:
    def __init__(
        self,
        settings: EmailSettings,
        gateway: RunGateway,
        files: FileStore,
        threads: ThreadStore,
        clock: Clock,
    ) -> None:
        self._settings = settings
        self._gateway = gateway
        self._files = files
        self._threads = threads
        self._clock = clock
        self.router = Router(settings)

    async def accept(self, raw: bytes, envelope: Envelope) -> Admission:
        try:
            parsed = parse_email(raw)
        except UnreadableMail as exc:
            # Permanent (5xx): a 451 would have the sending MTA retry this mail for days.
            logger.info("email from %s refused: %s", envelope.mail_from, exc)
            return Admission(Outcome.REJECTED, f"554 5.6.0 {exc}")
        return await self.accept_parsed(parsed, envelope, raw)

    async def accept_parsed(self, parsed: ParsedEmail, envelope: Envelope, raw: bytes) -> Admission:
        route = self._route(parsed, envelope)
        if route is None:
            return Admission(Outcome.REJECTED, "550 5.1.1 no such recipient here")
        limit = self._settings.max_attachments
        if len(parsed.attachments) > limit:
            logger.info(
                "email %s refused: %d attachments", parsed.message_id, len(parsed.attachments)
            )
            return Admission(Outcome.REJECTED, f"552 5.3.4 too many attachments (limit {limit})")
        verdict = loop_verdict(parsed, envelope.mail_from, self.router.is_own_address)
        if verdict.disposition is Disposition.DROP:
            logger.info("email %s dropped: %s", parsed.message_id, verdict.reason)
            return Admission(Outcome.DROPPED, verdict.reason)
        refusal = self._refusal(parsed, route, envelope)
        if refusal is not None:
            logger.info("email %s refused: %s", parsed.message_id, refusal)
            return Admission(Outcome.REJECTED, refusal)
        message_id = parsed.message_id or _content_id(envelope, raw)
        if await self._threads.received(message_id):
            return Admission(Outcome.DUPLICATE, "already received")
        conversation = await self._threads.conversation_of(parsed.thread_ids()) or (
            parsed.references[0] if parsed.references else message_id
        )
        reply_to = parsed.reply_to or parsed.from_address
        reply = verdict.disposition is Disposition.RUN and bool(reply_to)
        if reply:
            sent = await self._threads.replies_in_last_hour(reply_to)
            if sent >= self._settings.auto_replies_per_hour:
                logger.info("email %s: no reply, %s had %d this hour", message_id, reply_to, sent)
                reply = False
        message = InboundMessage(
            text=parsed.text,
            channel="email",
            sender=Person(id=parsed.from_address, name=parsed.from_name),
            conversation=Conversation(id=conversation),
            subject=parsed.subject,
            attachments=tuple(await self._store_attachments(parsed, message_id)),
            received_at=self._clock.now(),
            event=_event(parsed, envelope, route, message_id),
        )
        submitted = await self._gateway.submit(
            run_request_for(
                message,
                owner_id=self._settings.owner,
                workflow=route.workflow,
                fixed_inputs=route.inputs,
                reply_target=_reply_target(parsed, route, message_id, conversation, reply_to)
                if reply
                else ReplyTarget(channel="none"),
                idempotency_key=f"email:{message_id}"[:300],
                serial_key=f"email:{conversation}"[:300],
            )
        )
        await self._threads.record(
            message_id=message_id,
            conversation_id=conversation,
            direction="in",
            peer=reply_to or parsed.from_address,
            run_id=submitted.id,
            replied=reply,
        )
        if not submitted.created:
            return Admission(Outcome.DUPLICATE, "already received", id=submitted.id)
        return Admission(Outcome.ACCEPTED, verdict.reason, id=submitted.id)

    def _route(self, parsed: ParsedEmail, envelope: Envelope) -> RouteMatch | None:
        # One run per mail: the first of our recipients decides (envelope first, then headers).
        for address in [*envelope.recipients, *parsed.to, *parsed.cc]:
            match = self.router.route(address)
            if match is not None:
                return match
        return None

    def _refusal(self, parsed: ParsedEmail, route: RouteMatch, envelope: Envelope) -> str | None:
        if not sender_allowed(parsed.from_address, route.allow_senders):
            return f"550 5.7.1 {parsed.from_address or 'this sender'} may not write to this address"
        if route.require_dmarc and not authenticated_from(
            self._trusted_results(parsed, envelope),
            parsed.from_address,
            self._settings.trusted_authserv_id,
        ):
            return "550 5.7.1 this address takes only mail with a DMARC or aligned DKIM pass"
        return None

    def _trusted_results(self, parsed: ParsedEmail, envelope: Envelope) -> list[str]:
        """The Authentication-Results we believe (RFC 8601 §5; see ``authentication``): on the SMTP
        port only from a trusted relay, and only the block it prepended; through a webhook
        (signed by the provider, which is the border MTA) the provider's block."""
        if envelope.via == "smtp" and not self._settings.is_trusted_relay(envelope.peer):
            return []
        fields = [(name, str(value)) for name, value in parsed.message.raw_items()]
        return topmost_results(fields, self._settings.trusted_authserv_id)

    async def _store_attachments(self, parsed: ParsedEmail, message_id: str) -> list[Attachment]:
        """All of a mail's attachments in one transaction, keyed by its Message-ID: the sender's
        retry of a mail we did not acknowledge stores nothing twice."""
        incoming = [
            Incoming(_safe_filename(a.filename), a.content_type, a.data) for a in parsed.attachments
        ]
        urls = await self._files.store_all(
            self._settings.owner, incoming, key=f"email:{message_id}"
        )
        return [
            Attachment(
                filename=item.filename,
                content_type=item.content_type or "application/octet-stream",
                size=len(item.data),
                url=url,
            )
            for item, url in zip(incoming, urls, strict=True)
        ]


def _reply_target(
    parsed: ParsedEmail, route: RouteMatch, message_id: str, conversation: str, reply_to: str
) -> ReplyTarget:
    references = [*parsed.references]
    if not references and len(parsed.in_reply_to) == 1:
        references = [*parsed.in_reply_to]
    return ReplyTarget(
        channel="email",
        address=reply_to,
        thread_id=conversation,
        details={
            "subject": parsed.subject,
            "in_reply_to": message_id,
            "references": [*references, message_id],
            "from": route.recipient,
            "conversation_id": conversation,
        },
    )


def _event(
    parsed: ParsedEmail, envelope: Envelope, route: RouteMatch, message_id: str
) -> dict[str, Any]:
    return {
        "message_id": message_id,
        "from": parsed.from_address,
        "reply_to": parsed.reply_to,
        "to": list(parsed.to),
        "cc": list(parsed.cc),
        "recipient": route.recipient,
        "tag": route.tag,
        "in_reply_to": list(parsed.in_reply_to),
        "references": list(parsed.references),
        "headers": parsed.headers(),
        "text": parsed.full_text,
        "html": parsed.html,
        "envelope": {"mail_from": envelope.mail_from, "rcpt_tos": list(envelope.recipients)},
        "via": envelope.via,
    }


def _content_id(envelope: Envelope, raw: bytes) -> str:
    """A stand-in Message-ID for mail without one: the same mail retried gets the same id."""
    digest = hashlib.sha256()
    for part in (envelope.mail_from or "", *envelope.recipients):
        digest.update(part.encode() + b"\0")
    digest.update(raw)
    return f"<sha256.{digest.hexdigest()[:40]}@switchboard.invalid>"


def _safe_filename(name: str) -> str:
    name = os.path.basename(name.replace("\\", "/")).strip().replace("\0", "")
    if name in {"", ".", ".."}:
        return "attachment"
    stem, ext = os.path.splitext(name)
    return stem[: 200 - len(ext[:20])] + ext[:20]
