"""The chat tester's channel (``core.channels.Channel`` ``console``): a message typed in the
console walks the path a real one walks, and only the transport is the console's own.

In: :meth:`ConsoleChat.say` writes the message to the inbox in the channel's own shape (a Slack
Events API ``message.im`` envelope, a Twilio WhatsApp webhook form, an RFC 5322 mail) under the
trigger ``console:<kind>``, attributed to a synthetic user of the signed-in owner (team
``console``, ``whatsapp:console-<owner>``, ``<owner>@console.invalid``: no real workspace, number
or domain can collide). The inbox processor hands it to the channel's processing
(``console/chat_processing.py``) with the channel's settings (its routes; the owner is the
tester's; no workflow configured: ``[console] chat_workflow``). The run request it returns is
the channel's, with one change: its reply target is ``console`` (the channel's own target kept
in ``details.target``), so the real Slack, Twilio or SMTP sender never sees it.

Out: the run completes, the outbox writes its delivery and hands it to the tester's sender
(``console/chat_sender.py``): the channel's renderer and, for WhatsApp and email, its sender,
over a transport that puts the parts in :class:`~console.transcripts.Transcripts` for the window.

Exactly once: one typed message is one inbox event (dedupe key
``console:<kind>:<owner>:<message id>``, the id the page generates per message), one run (the
channel's idempotency key), one delivery, and each part is shown once (by delivery and part).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from urllib.parse import urlencode

import aiohttp

from console.chat_parts import (
    KINDS,
    MAIL_DOMAIN,
    OUR_NUMBER,
    OWNER_HEADER,
    TEAM,
    TRIGGER_PREFIX,
    TWILIO_ACCOUNT,
    ChatDeps,
    chat_triggers,
    sender_address,
    trigger_of,
    whatsapp_user,
)
from console.chat_processing import ChatProcessor
from console.chat_sender import ChatSender
from console.transcripts import ChatLine, Transcripts
from core.errors import BadRequest
from core.inbox import AcceptedEvent, ArrivingEvent, EventProcessor, TriggerHealth
from core.models import RunRecord
from core.ports import Sender
from triggers.email.threads import ThreadStore
from triggers.whatsapp.process import MESSAGE, WEBHOOK_HEADER

MAX_TEXT = 20_000
"""Characters one typed message may have."""
DEFAULT_SUBJECT = "Hello"


class ConsoleChat:
    """Implements :class:`core.channels.Channel` for the console's chat tester."""

    name = "console"
    prefix = "/console/chat"

    def __init__(self, deps: Callable[[], ChatDeps]) -> None:
        self._deps = deps
        self.transcripts = Transcripts()
        self._processor: ChatProcessor | None = None
        self._sender: ChatSender | None = None
        self._last_ts = 0.0

    def _ts(self, now: datetime) -> datetime:
        """``now``, or a microsecond after the last message's time: a Slack message is named
        by its ``ts`` (the run's idempotency key), so no two may share one."""
        stamp = max(now.timestamp(), self._last_ts + 1e-6)
        self._last_ts = stamp
        return datetime.fromtimestamp(stamp, tz=UTC)

    def edge(self) -> object | None:
        """None: the tester's routes are the console's (``console/chat.py``)."""
        return None

    async def start(self, stack: AsyncExitStack) -> None:
        deps = self._deps()
        threads = ThreadStore(deps.database, deps.clock)
        # Bolt's Web API client needs a session; the tester's Slack processing makes no call.
        session = aiohttp.ClientSession()
        stack.push_async_callback(session.close)
        self._processor = ChatProcessor(deps, threads, session)
        self._sender = ChatSender(deps, threads, self.transcripts, self._processor.workspace)
        stack.push_async_callback(self._sender.aclose)

    @property
    def processors(self) -> Mapping[str, EventProcessor]:
        if self._processor is None:
            raise RuntimeError("the chat tester is not started")
        return dict.fromkeys(chat_triggers(), self._processor)

    @property
    def sender(self) -> Sender | None:
        return self._sender

    def run_started(self, run: RunRecord) -> None:
        """As a Slack user: ``:eyes:`` on the message the run answers, as Slack shows it."""
        if self._sender is not None:
            self._sender.working(run.reply_target)

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
        stamp = self._ts(now)
        body, headers = _event_body(kind, owner, text, subject, message_id, stamp)
        accepted = await deps.inbox.accept(
            ArrivingEvent(
                trigger=trigger_of(kind),
                ordering_key=f"{TRIGGER_PREFIX}{kind}:{owner}",
                body=body,
                dedupe_key=f"{TRIGGER_PREFIX}{kind}:{owner}:{message_id}",
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
                    ref=slack_ts(stamp) if kind == "slack" else None,
                )
            )
        return accepted


def slack_ts(moment: datetime) -> str:
    """A Slack message's ``ts``: its time in seconds, to the microsecond."""
    return f"{moment.timestamp():.6f}"


def _event_body(
    kind: str, owner: str, text: str, subject: str, message_id: str, now: datetime
) -> tuple[bytes, dict[str, str]]:
    """The event as the channel's provider would have sent it, and the headers stored with it."""
    if kind == "slack":
        ts = slack_ts(now)
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
            "MessageSid": f"SM{TEAM}-{owner}-{message_id}",
            "AccountSid": TWILIO_ACCOUNT,
            "From": whatsapp_user(owner),
            "To": OUR_NUMBER,
            "Body": text,
            "NumMedia": "0",
            "ProfileName": owner,
            "WaId": f"{TEAM}-{owner}",
        }
        return urlencode(form).encode(), {WEBHOOK_HEADER: MESSAGE}
    mail = EmailMessage()
    mail["From"] = f"{owner} <{sender_address(owner)}>"
    mail["To"] = f"switchboard@{MAIL_DOMAIN}"
    mail["Subject"] = subject.strip() or DEFAULT_SUBJECT
    mail["Date"] = format_datetime(now)
    mail["Message-ID"] = make_msgid(idstring=message_id, domain=MAIL_DOMAIN)
    mail.set_content(text)
    headers = {"rcpt-to": f"switchboard@{MAIL_DOMAIN}", "mail-from": sender_address(owner)}
    return mail.as_bytes(), headers
