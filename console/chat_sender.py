"""The chat tester's :class:`core.ports.Sender` (channel ``console``): each channel's own sender,
over a transport that hands what it sends to the window (``console/chat_channel.py``).

:class:`SlackSender` (mrkdwn, parts of ``message_limit``, the reaction swap) on an aiohttp
session that answers the Web API in process (``console/chat_slack_api.py``);
:class:`WhatsAppSender` (the 24-hour window, parts of at most 1,600 characters, the message log)
on a twilio-python HTTP client that answers the Messages API (:class:`WindowTwilio`);
:class:`EmailSender` (threading headers, Message-ID, attachments) on a ``MailTransport`` that
takes the mail (:class:`WindowMail`). Each is the seam its library has for a transport.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

from twilio.http import AsyncHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from console.chat_parts import (
    KINDS,
    TEAM,
    TWILIO_ACCOUNT,
    ChatDeps,
    email_settings,
    slack_settings,
    whatsapp_settings,
)
from console.chat_processing import TesterWorkspace
from console.chat_slack_api import WindowSession
from console.transcripts import ChatLine, Transcripts
from core.replies import Delivery, SendResult
from triggers.email.sender import EmailSender, Handover
from triggers.email.threads import ThreadStore
from triggers.slack.sender import Reactions, SlackSender
from triggers.whatsapp.message_log import MessageLog
from triggers.whatsapp.sender import WhatsAppSender

logger = logging.getLogger(__name__)


class ChatSender:
    """Sends ``console`` deliveries: ``details.as`` names the channel, ``details.target`` the
    channel's own reply target."""

    def __init__(
        self,
        deps: ChatDeps,
        threads: ThreadStore,
        transcripts: Transcripts,
        workspace: TesterWorkspace,
    ) -> None:
        self._deps = deps
        self._workspace = workspace
        self._threads = threads
        self._transcripts = transcripts
        self._log = MessageLog(deps.database, deps.clock, deps.delivery_failures)
        self._reactions = Reactions()
        """shared: a reply's swap waits for the ``:eyes:`` its run's start added"""

    async def aclose(self) -> None:
        await self._reactions.aclose()

    def working(self, target: Mapping[str, Any] | None) -> None:
        """``SlackSender.working`` for a tester's Slack message whose run just started."""
        details: Mapping[str, Any] = (target or {}).get("details") or {}
        if details.get("as") == "slack" and details.get("owner"):
            owner = str(details["owner"])
            self._slack_sender(owner, WindowSession(self._reacted)).working(details.get("target"))

    def _reacted(self, channel: str, ts: str, name: str, added: bool) -> None:
        owner = channel.removeprefix(f"D{TEAM}-")
        self._transcripts.react(owner, "slack", ts, name, added=added)

    def _slack_sender(self, owner: str, window: WindowSession) -> SlackSender:
        return SlackSender(
            self._workspace,
            self._deps.http,
            slack_settings(self._deps, owner),
            self._reactions,
            window,  # type: ignore[arg-type]  # the session's two members slack_sdk uses
            self._deps.files,
            delivery_attempts=self._deps.delivery_attempts,
        )

    async def send(self, delivery: Delivery) -> SendResult:
        details: Mapping[str, Any] = delivery.target.get("details") or {}
        kind, owner = str(details.get("as") or ""), str(details.get("owner") or "")
        if kind not in KINDS or not owner:
            return SendResult.failed(f"not a chat tester target: {delivery.target}")
        if delivery.reply is None:
            return SendResult.sent()
        as_channel = delivery.model_copy(update={"target": details.get("target") or {}})
        if kind == "email":
            return await self._email(as_channel, owner)
        if kind == "whatsapp":
            return await self._whatsapp(as_channel, owner)
        return await self._slack(as_channel, owner)

    async def _slack(self, delivery: Delivery, owner: str) -> SendResult:
        window = WindowSession(self._reacted)
        result = await self._slack_sender(owner, window).send(delivery)
        total = result.progress if result.outcome == "sent" else 0
        for posted in window.posted:
            self._show(delivery, owner, "slack", [posted.text], first=posted.part, total=total)
        return result

    async def _whatsapp(self, delivery: Delivery, owner: str) -> SendResult:
        taken: list[str] = []
        client = Client(TWILIO_ACCOUNT, "console", http_client=WindowTwilio(taken))
        client.edge = client.region = None
        sender = WhatsAppSender(
            client,
            whatsapp_settings(self._deps, owner),
            self._deps.chats,
            self._deps.clock,
            self._log,
            status_callback=None,
        )
        result = await sender.send(delivery)
        # The parts taken now are the last ones of those sent so far (a retry resumes).
        self._show(
            delivery,
            owner,
            "whatsapp",
            taken,
            first=result.progress - len(taken),
            total=result.progress if result.outcome == "sent" else 0,
        )
        return result

    async def _email(self, delivery: Delivery, owner: str) -> SendResult:
        taken: list[EmailMessage] = []
        sender = EmailSender(
            email_settings(self._deps, owner),
            WindowMail(taken),
            self._threads,
            self._deps.files,
            self._deps.clock,
            max_attempts=self._deps.delivery_attempts,
        )
        result = await sender.send(delivery)
        for mail in taken:
            body = mail.get_body(("plain",))
            text = body.get_content() if isinstance(body, EmailMessage) else ""
            headers = tuple(
                (name, str(mail[name]))
                for name in ("From", "To", "Subject", "In-Reply-To", "Message-ID")
                if mail[name] is not None
            )
            self._show(
                delivery,
                owner,
                "email",
                [text],
                first=0,
                total=1,
                subject=str(mail["Subject"]),
                headers=headers,
            )
        return result

    def _show(
        self,
        delivery: Delivery,
        owner: str,
        kind: str,
        parts: Sequence[str],
        *,
        first: int,
        total: int,
        subject: str | None = None,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        """Parts ``first``… of ``total`` (0: not known yet) into the window, each once."""
        now = self._deps.clock.now()
        for index, text in enumerate(parts, first):
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
                    parts=max(total, index + 1),
                    run_id=delivery.run_id,
                    headers=headers,
                ),
                delivery=(delivery.id, index),
            )


@dataclass(frozen=True, slots=True)
class WindowMail:
    """The email channel's ``MailTransport``: the mail is taken for the window (no SMTP relay,
    no Maildir)."""

    taken: list[EmailMessage]

    async def deliver(self, message: EmailMessage, recipients: Sequence[str]) -> Handover:
        self.taken.append(message)
        return Handover(SendResult.sent(str(message["Message-ID"])))


class WindowTwilio(AsyncHttpClient):  # type: ignore[misc]  # twilio ships no types
    """twilio-python's HTTP client answering the Messages API in process: a created message's
    ``Body`` is taken for the window; a list (the sender's check for messages an interrupted
    attempt sent) is empty, as the window keeps each part once anyway."""

    def __init__(self, taken: list[str]) -> None:
        super().__init__(logger=logger, is_async=True)
        self.taken = taken

    async def request(
        self,
        method: str,
        uri: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> Response:
        if not uri.endswith("/Messages.json"):
            return Response(404, json.dumps({"code": 20404, "message": f"not here: {uri}"}))
        if method == "GET":
            meta = {"key": "messages", "next_page_url": None, "page": 0, "page_size": 20}
            return Response(200, json.dumps({"messages": [], "meta": meta}))
        fields = data or {}
        self.taken.append(str(fields.get("Body") or fields.get("MediaUrl") or ""))
        message = {
            "sid": "SM" + secrets.token_hex(16),
            "account_sid": TWILIO_ACCOUNT,
            "status": "queued",
            "from": fields.get("From"),
            "to": fields.get("To"),
            "body": fields.get("Body"),
        }
        return Response(201, json.dumps(message))
