"""Processing a stored mail (``email:smtp``, ``email:mailgun``, ``email:sendgrid``) into its run.

Called by the inbox processor (``core.inbox.EventProcessor``), one mail of a thread at a time.
Here the mail is parsed; the loop rules (PROTOCOLS §3.8) drop bounces and automatic replies
(:class:`~core.inbox.Ignored` with the reason) or make the run silent; the thread is found
(``threads.py``); attachments go to the file store (one transaction, keyed by the Message-ID);
and one run request is returned, with the idempotency key ``email:<Message-ID>`` as before.
Processing the same event again (a crash, a retry) makes the same request and reuses what the
first attempt recorded (the thread, the reply decision, the stored files): one run, one reply.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from core.clock import Clock
from core.inbox import Ignored, ProcessingResult, StoredEvent
from core.messages import Attachment, Conversation, InboundMessage, Person, run_request_for
from core.models import ReplyTarget
from triggers.email.edge import KEY_LIMIT, Envelope, first_route, sender_refusal
from triggers.email.headers import content_id, read_head
from triggers.email.loops import Disposition, Verdict, loop_verdict
from triggers.email.parse import ParsedEmail, UnreadableMail, parse_email
from triggers.email.routing import RouteMatch, Router
from triggers.email.settings import EmailSettings
from triggers.email.threads import ThreadStore
from triggers.files import FileStore, Incoming

logger = logging.getLogger(__name__)

VIAS = ("smtp", "mailgun", "sendgrid")
"""The ways mail comes in; trigger ``email:<via>`` each."""


class EmailProcessor:
    """The :class:`core.inbox.EventProcessor` of one email trigger (``email:<via>``)."""

    def __init__(
        self,
        settings: EmailSettings,
        *,
        via: str,
        files: FileStore,
        threads: ThreadStore,
        clock: Clock,
    ) -> None:
        self._settings = settings
        self._via = via
        self._files = files
        self._threads = threads
        self._clock = clock
        self._router = Router(settings)

    async def process(self, event: StoredEvent) -> ProcessingResult:
        envelope = Envelope.of(self._via, event.headers)
        raw = event.body
        try:
            parsed = parse_email(raw)
        except UnreadableMail as exc:
            return Ignored(f"unreadable mail: {exc}")
        route = first_route(self._router, envelope.recipients, read_head(raw))
        if route is None:  # the settings changed since the edge took it
            return Ignored("no recipient of ours")
        if len(parsed.attachments) > self._settings.max_attachments:
            limit = self._settings.max_attachments
            return Ignored(f"{len(parsed.attachments)} attachments (limit {limit})")
        verdict = loop_verdict(parsed, envelope.mail_from, self._router.is_own_address)
        if verdict.disposition is Disposition.DROP:
            logger.info("email %s dropped: %s", parsed.message_id, verdict.reason)
            return Ignored(verdict.reason)
        refusal = sender_refusal(self._settings, read_head(raw), route, envelope)
        if refusal is not None:
            return Ignored(refusal)
        message_id = parsed.message_id or content_id(envelope.mail_from, envelope.recipients, raw)
        reply_to = parsed.reply_to or parsed.from_address
        conversation, reply = await self._thread(parsed, message_id, reply_to, verdict)
        message = InboundMessage(
            text=parsed.text,
            channel="email",
            sender=Person(id=parsed.from_address, name=parsed.from_name),
            conversation=Conversation(id=conversation),
            subject=parsed.subject,
            attachments=tuple(await self._store_attachments(parsed, message_id)),
            received_at=event.received_at,
            event=_event(parsed, envelope, route, message_id),
        )
        return [
            run_request_for(
                message,
                owner_id=self._settings.owner,
                workflow=route.workflow,
                fixed_inputs=route.inputs,
                reply_target=_reply_target(parsed, route, message_id, conversation, reply_to)
                if reply
                else ReplyTarget(channel="none"),
                idempotency_key=f"email:{message_id}"[:KEY_LIMIT],  # a replay's: the inbox's
                serial_key=f"email:{conversation}"[:KEY_LIMIT],
            )
        ]

    async def _thread(
        self, parsed: ParsedEmail, message_id: str, reply_to: str, verdict: Verdict
    ) -> tuple[str, bool]:
        """The mail's conversation and whether it is answered, decided once per mail."""
        earlier = await self._threads.inbound(message_id)
        if earlier is not None:
            return earlier.conversation_id, earlier.replied
        conversation = await self._threads.conversation_of(parsed.thread_ids()) or (
            parsed.references[0] if parsed.references else message_id
        )
        reply = verdict.disposition is Disposition.RUN and bool(reply_to)
        if reply:
            sent = await self._threads.replies_in_last_hour(reply_to, besides=message_id)
            if sent >= self._settings.auto_replies_per_hour:
                logger.info("email %s: no reply, %s had %d this hour", message_id, reply_to, sent)
                reply = False
        await self._threads.record(
            message_id=message_id,
            conversation_id=conversation,
            direction="in",
            peer=reply_to or parsed.from_address,
            replied=reply,
        )
        return conversation, reply

    async def _store_attachments(self, parsed: ParsedEmail, message_id: str) -> list[Attachment]:
        """All of a mail's attachments in one transaction, keyed by its Message-ID: processing
        the mail again stores nothing twice."""
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


def _safe_filename(name: str) -> str:
    name = os.path.basename(name.replace("\\", "/")).strip().replace("\0", "")
    if name in {"", ".", ".."}:
        return "attachment"
    stem, ext = os.path.splitext(name)
    return stem[: 200 - len(ext[:20])] + ext[:20]
