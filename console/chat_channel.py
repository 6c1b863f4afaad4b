"""The chat tester's channel (``core.channels.Channel`` ``console``): a message typed in the
console walks the path a real one walks, and only the transport is the console's own.

In: :meth:`ConsoleChat.say` writes the message to the inbox in the channel's own shape (a Slack
Events API ``message.im`` envelope, a Twilio WhatsApp webhook form, an RFC 5322 mail) under the
trigger ``console:<kind>``, attributed to a synthetic user of the signed-in owner (team
``console``, ``whatsapp:console-<owner>``, ``<owner>@console.invalid``: no real workspace, number
or domain can collide). The inbox processor hands it to :class:`ChatProcessor`, which runs that
channel's processing on it — Slack's payload rules (the ones its bolt listeners apply: guards,
mention, route, message, run request; bolt itself needs a workspace token), WhatsApp's parse and
route, and email's own :class:`~triggers.email.process.EmailProcessor` — with the channel's
settings (its routes; the owner is the tester's; no workflow configured: ``[console]
chat_workflow``). The run request it returns is the channel's, with one change: its reply target
is ``console`` (the channel's own target kept in ``details.target``), so the real Slack, Twilio
or SMTP sender never sees it.

Out: the run completes, the outbox writes its delivery and hands it to :class:`ChatSender`,
which renders the reply with that channel's renderer (Slack mrkdwn in parts of ``message_limit``;
WhatsApp's parts of at most 1,600 characters; email through the real
:class:`~triggers.email.sender.EmailSender`, whose mail transport is replaced) and stores the
parts in :class:`~console.transcripts.Transcripts` for the window to show.

Exactly once: one typed message is one inbox event (dedupe key ``console:<kind>:<message id>``,
the id the page generates per message), one run (the channel's idempotency key), one delivery,
and each part is shown once (by delivery and part).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Any
from urllib.parse import urlencode

from console.transcripts import ChatLine, Transcripts
from core.clock import Clock
from core.db import Database
from core.errors import BadRequest
from core.inbox import (
    AcceptedEvent,
    ArrivingEvent,
    EventProcessor,
    Ignored,
    Inbox,
    ProcessingResult,
    StoredEvent,
    TriggerHealth,
)
from core.messages import run_request_for
from core.models import ReplyTarget, RunRecord, RunRequest
from core.ports import Sender
from core.replies import Delivery, SendResult
from triggers.email.process import EmailProcessor
from triggers.email.sender import EmailSender, Handover
from triggers.email.settings import EmailSettings
from triggers.email.threads import ThreadStore
from triggers.files import FileStore
from triggers.slack.payloads import (
    choose_workflow,
    event_run_request,
    ignored_because,
    message_from_event,
)
from triggers.slack.render import render_mrkdwn, split_mrkdwn
from triggers.slack.sender import with_links
from triggers.slack.settings import SlackSettings
from triggers.whatsapp.parse import chat_key, form_pairs, inbound_message, route_message
from triggers.whatsapp.render import session_messages
from triggers.whatsapp.settings import WhatsAppSettings

KINDS = ("slack", "whatsapp", "email")
"""The channels the tester speaks as."""
TRIGGER_PREFIX = "console:"
OWNER_HEADER = "console-owner"
TEAM = "console"
"""The Slack workspace of the tester's messages (real team ids are ``T…``)."""
OUR_NUMBER = "whatsapp:console"
MAIL_DOMAIN = "console.invalid"
"""RFC 2606: ``.invalid`` names no real host, so no real mail can be one of these."""
MAX_TEXT = 20_000
"""Characters one typed message may have."""
AUTO_REPLIES = 1_000_000
"""Email's replies-per-sender-per-hour guard is for strangers' auto-responders: the tester is the
operator typing, so it is not held to ``[email] auto_replies_per_hour``."""


@dataclass(frozen=True, slots=True)
class ChatDeps:
    """What the tester's channel takes from the running services."""

    inbox: Inbox
    database: Database
    clock: Clock
    files: FileStore
    slack: SlackSettings
    whatsapp: WhatsAppSettings
    email: EmailSettings
    workflow: str
    """``[console] chat_workflow``: answers a channel that names no workflow of its own"""
    delivery_attempts: int


def trigger_of(kind: str) -> str:
    return f"{TRIGGER_PREFIX}{kind}"


def chat_triggers() -> list[str]:
    return [trigger_of(kind) for kind in KINDS]


class ConsoleChat:
    """Implements :class:`core.channels.Channel` for the console's chat tester."""

    name = "console"
    prefix = "/console/chat"

    def __init__(self, deps: Callable[[], ChatDeps]) -> None:
        self._deps = deps
        self.transcripts = Transcripts()
        self._processor: ChatProcessor | None = None
        self._sender: ChatSender | None = None

    def edge(self) -> object | None:
        """None: the tester's routes are the console's (``console/chat.py``)."""
        return None

    async def start(self, stack: AsyncExitStack) -> None:
        deps = self._deps()
        threads = ThreadStore(deps.database, deps.clock)
        self._processor = ChatProcessor(deps, threads)
        self._sender = ChatSender(deps, threads, self.transcripts)

    @property
    def processors(self) -> Mapping[str, EventProcessor]:
        if self._processor is None:
            raise RuntimeError("the chat tester is not started")
        return dict.fromkeys(chat_triggers(), self._processor)

    @property
    def sender(self) -> Sender | None:
        return self._sender

    def run_started(self, run: RunRecord) -> None:
        """The window shows nothing while a run works."""

    async def health(self, trigger: TriggerHealth) -> Mapping[str, object]:
        return {}

    async def say(
        self, owner: str, kind: str, text: str, *, subject: str = "", message_id: str = ""
    ) -> AcceptedEvent:
        """Write what the tester typed to the inbox as ``kind``'s event (``BadRequest`` naming
        the field that is wrong); a ``message_id`` sent before is that event again."""
        if kind not in KINDS:
            raise BadRequest(f"as: one of {', '.join(KINDS)}")
        if not text.strip():
            raise BadRequest("text: type a message")
        if len(text) > MAX_TEXT:
            raise BadRequest(f"text: at most {MAX_TEXT} characters")
        if len(subject) > 500:
            raise BadRequest("subject: at most 500 characters")
        message_id = message_id.strip() or uuid.uuid4().hex
        if not (message_id.isascii() and message_id.replace("-", "").isalnum()):
            raise BadRequest("message_id: letters, digits and '-' only")
        if len(message_id) > 64:
            raise BadRequest("message_id: at most 64 characters")
        deps = self._deps()
        now = deps.clock.now()
        body, headers = _event_body(kind, owner, text, subject, message_id, now)
        accepted = await deps.inbox.accept(
            ArrivingEvent(
                trigger=trigger_of(kind),
                ordering_key=f"{TRIGGER_PREFIX}{kind}:{owner}",
                body=body,
                dedupe_key=f"{TRIGGER_PREFIX}{kind}:{message_id}",
                headers={OWNER_HEADER: owner, **headers},
            )
        )
        if not accepted.duplicate:
            self.transcripts.add(
                ChatLine(
                    seq=0,
                    owner=owner,
                    kind=kind,
                    direction="in",
                    text=text,
                    at=now,
                    subject=(subject.strip() or DEFAULT_SUBJECT) if kind == "email" else None,
                    event_id=accepted.id,
                )
            )
        return accepted


DEFAULT_SUBJECT = "Hello"


def _event_body(
    kind: str, owner: str, text: str, subject: str, message_id: str, now: Any
) -> tuple[bytes, dict[str, str]]:
    """The event as the channel's provider would have sent it, and the headers stored with it."""
    if kind == "slack":
        ts = f"{now.timestamp():.6f}"
        envelope = {
            "type": "event_callback",
            "team_id": TEAM,
            "api_app_id": TEAM,
            "event_id": f"Ev{TEAM}-{message_id}",
            "event_time": int(now.timestamp()),
            "event": {
                "type": "message",
                "channel_type": "im",
                "channel": f"D{TEAM}-{owner}",
                "user": f"U{TEAM}-{owner}",
                "team": TEAM,
                "ts": ts,
                "text": text,
                "user_profile": {"display_name": owner, "real_name": owner},
                "client_msg_id": message_id,
            },
        }
        return json.dumps(envelope).encode(), {"content-type": "application/json"}
    if kind == "whatsapp":
        form = {
            "MessageSid": f"SM{TEAM}-{message_id}",
            "AccountSid": f"AC{TEAM}",
            "From": f"whatsapp:{TEAM}-{owner}",
            "To": OUR_NUMBER,
            "Body": text,
            "NumMedia": "0",
            "ProfileName": owner,
            "WaId": f"{TEAM}-{owner}",
        }
        return urlencode(form).encode(), {"twilio-webhook": "message"}
    mail = EmailMessage()
    mail["From"] = f"{owner} <{sender_address(owner)}>"
    mail["To"] = f"switchboard@{MAIL_DOMAIN}"
    mail["Subject"] = subject.strip() or DEFAULT_SUBJECT
    mail["Date"] = format_datetime(now)
    mail["Message-ID"] = make_msgid(idstring=message_id, domain=MAIL_DOMAIN)
    mail.set_content(text)
    headers = {"rcpt-to": f"switchboard@{MAIL_DOMAIN}", "mail-from": sender_address(owner)}
    return mail.as_bytes(), headers


def sender_address(owner: str) -> str:
    return f"{owner}@{MAIL_DOMAIN}"


class ChatProcessor:
    """The ``console:<kind>`` triggers' :class:`core.inbox.EventProcessor`: the channel's own
    processing of the event, then the reply target handed to the console."""

    def __init__(self, deps: ChatDeps, threads: ThreadStore) -> None:
        self._deps = deps
        self._threads = threads

    async def process(self, event: StoredEvent) -> ProcessingResult:
        owner = event.headers.get(OWNER_HEADER, "")
        kind = event.trigger.removeprefix(TRIGGER_PREFIX)
        if not owner or kind not in KINDS:
            return Ignored(f"not a chat tester event ({event.trigger}, owner {owner!r})")
        if kind == "slack":
            result = self._slack(event, owner)
        elif kind == "whatsapp":
            result = self._whatsapp(event, owner)
        else:
            result = await self._email(event, owner)
        if isinstance(result, Ignored):
            return result
        return [_to_console(request, kind, owner, event.id) for request in result]

    def _slack(self, event: StoredEvent, owner: str) -> ProcessingResult:
        """What ``SlackProcessor._message`` does for a DM, with no Web API to ask."""
        body = json.loads(event.body)
        message = body["event"]
        settings = self._deps.slack
        reason = ignored_because(message, None)
        if reason is not None:
            return Ignored(reason)
        routed = settings.model_copy(update={"workflow": settings.workflow or self._deps.workflow})
        chosen = choose_workflow(routed, channel=str(message["channel"]), text=message["text"])
        if chosen is None:
            return Ignored("no workflow for the message")
        inbound = message_from_event(
            message,
            bot_user_id=None,
            sender_name=message["user_profile"]["display_name"],
            attachments=(),
            received_at=event.received_at,
        )
        return [
            event_run_request(
                inbound, chosen, owner_id=owner, team_id=TEAM, event_id=body.get("event_id")
            )
        ]

    def _whatsapp(self, event: StoredEvent, owner: str) -> ProcessingResult:
        """What ``WhatsAppProcessor._message`` does for a message without media."""
        params = dict(form_pairs(event.body))
        settings = self._deps.whatsapp
        routed_settings = settings.model_copy(
            update={"workflow": settings.workflow or self._deps.workflow}
        )
        user, ours = params["From"], params["To"]
        routed = route_message(routed_settings, ours, params["Body"])
        if routed is None:
            return Ignored("no workflow for the message")
        message = inbound_message(params, routed, attachments=(), received_at=event.received_at)
        sid = params["MessageSid"]
        key = f"whatsapp:{sid}"
        if event.replay_of is not None:
            key += f":replay:{event.id}"
        return [
            run_request_for(
                message,
                owner_id=owner,
                workflow=routed.workflow,
                fixed_inputs=routed.inputs,
                reply_target=ReplyTarget(
                    channel="whatsapp", address=user, details={"from": ours, "message_sid": sid}
                ),
                idempotency_key=key,
                serial_key=chat_key(ours, user),
            )
        ]

    async def _email(self, event: StoredEvent, owner: str) -> ProcessingResult:
        """Email's own processor, for mail to the tester's domain."""
        processor = EmailProcessor(
            email_settings(self._deps, owner),
            via="console",
            files=self._deps.files,
            threads=self._threads,
            clock=self._deps.clock,
        )
        return await processor.process(event)


def email_settings(deps: ChatDeps, owner: str) -> EmailSettings:
    """``[email]`` for the tester: its routes, the tester's domain ours, the tester's owner."""
    settings = deps.email
    return settings.model_copy(
        update={
            "owner": owner,
            "domains": (*settings.domains, MAIL_DOMAIN),
            "workflow": settings.workflow or deps.workflow,
            "auto_replies_per_hour": AUTO_REPLIES,
        }
    )


def _to_console(request: RunRequest, kind: str, owner: str, event_id: str) -> RunRequest:
    """The channel's run request, answered in the console (its own target kept)."""
    original = request.reply_target
    if original is None or original.channel == "none":
        return request  # the channel decided not to answer: neither does the tester
    target = ReplyTarget(
        channel="console",
        address=f"{kind}:{owner}",
        thread_id=original.thread_id,
        details={
            "as": kind,
            "owner": owner,
            "event_id": event_id,
            "target": original.model_dump(mode="json"),
        },
    )
    return request.model_copy(update={"reply_target": target})


class ChatSender:
    """The ``console`` channel's :class:`core.ports.Sender`: the channel's renderer, then the
    window instead of Slack's, Twilio's or SMTP's API."""

    def __init__(self, deps: ChatDeps, threads: ThreadStore, transcripts: Transcripts) -> None:
        self._deps = deps
        self._threads = threads
        self._transcripts = transcripts

    async def send(self, delivery: Delivery) -> SendResult:
        details: Mapping[str, Any] = delivery.target.get("details") or {}
        kind, owner = str(details.get("as") or ""), str(details.get("owner") or "")
        if kind not in KINDS or not owner:
            return SendResult.failed(f"not a chat tester target: {delivery.target}")
        reply = delivery.reply
        if reply is None:
            return SendResult.sent()
        if kind == "email":
            return await self._email(delivery, owner)
        if kind == "slack":
            text = with_links(reply.text, list(reply.attachments))
            rendered = render_mrkdwn(text) if text.strip() else ""
            parts = split_mrkdwn(rendered, self._deps.slack.message_limit) if rendered else []
        else:
            parts = [m.body or m.media_url or "" for m in session_messages(reply)]
        self._show(delivery, owner, kind, parts)
        return SendResult.sent(progress=len(parts))

    def _show(
        self,
        delivery: Delivery,
        owner: str,
        kind: str,
        parts: Sequence[str],
        *,
        subject: str | None = None,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        now = self._deps.clock.now()
        for index, text in enumerate(parts):
            self._transcripts.add(
                ChatLine(
                    seq=0,
                    owner=owner,
                    kind=kind,
                    direction="out",
                    text=text,
                    at=now,
                    subject=subject,
                    part=index,
                    parts=len(parts),
                    run_id=delivery.run_id,
                    headers=headers,
                ),
                delivery=(delivery.id, index),
            )

    async def _email(self, delivery: Delivery, owner: str) -> SendResult:
        """The real email sender (threading, Message-ID, attachments) over a transport that
        hands the composed mail to the window."""
        original = (delivery.target.get("details") or {}).get("target") or {}
        shown: list[EmailMessage] = []
        sender = EmailSender(
            email_settings(self._deps, owner),
            _WindowTransport(shown),
            self._threads,
            self._deps.files,
            self._deps.clock,
            max_attempts=self._deps.delivery_attempts,
        )
        result = await sender.send(delivery.model_copy(update={"target": original}))
        for mail in shown:
            body = mail.get_body(("plain",))
            text = body.get_content() if isinstance(body, EmailMessage) else ""
            headers = tuple(
                (name, str(mail[name]))
                for name in ("From", "To", "Subject", "In-Reply-To", "Message-ID")
                if mail[name] is not None
            )
            self._show(
                delivery, owner, "email", [text], subject=str(mail["Subject"]), headers=headers
            )
        return result


@dataclass(frozen=True, slots=True)
class _WindowTransport:
    """``MailTransport``: the mail is taken, for the window (no SMTP, no Maildir)."""

    taken: list[EmailMessage]

    async def deliver(self, message: EmailMessage, recipients: Sequence[str]) -> Handover:
        self.taken.append(message)
        return Handover(SendResult.sent(str(message["Message-ID"])))
