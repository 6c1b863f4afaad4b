"""The chat tester's :class:`core.inbox.EventProcessor`: each channel's own processing of the
event the tester wrote, then the reply target handed to the console (``console/chat_channel.py``).

WhatsApp and email run their channel's processor itself (:class:`WhatsAppProcessor`,
:class:`EmailProcessor`) with the tester's settings. Slack's processor is bolt's dispatch, which
asks the Web API who the bot is in the event's workspace (``auth.test``) before any listener
runs; the tester's workspace has no token, so it runs the rules those listeners apply to a DM
(``triggers.slack.payloads``: guards, route, message, run request).
"""

from __future__ import annotations

import json

from console.chat_parts import (
    KINDS,
    OWNER_HEADER,
    TEAM,
    TRIGGER_PREFIX,
    TWILIO_ACCOUNT,
    ChatDeps,
    email_settings,
    slack_settings,
    whatsapp_settings,
)
from core.inbox import Ignored, ProcessingResult, StoredEvent
from core.models import ReplyTarget, RunRequest
from triggers.email.process import EmailProcessor
from triggers.email.threads import ThreadStore
from triggers.slack.payloads import (
    choose_workflow,
    event_run_request,
    ignored_because,
    message_from_event,
)
from triggers.whatsapp.media import MediaFetcher
from triggers.whatsapp.message_log import MessageLog
from triggers.whatsapp.process import WhatsAppProcessor


class ChatProcessor:
    """The ``console:<kind>`` triggers' processor (one for the three)."""

    def __init__(self, deps: ChatDeps, threads: ThreadStore) -> None:
        self._deps = deps
        self._threads = threads
        self._log = MessageLog(deps.database, deps.clock, deps.delivery_failures)

    async def process(self, event: StoredEvent) -> ProcessingResult:
        owner = event.headers.get(OWNER_HEADER, "")
        kind = event.trigger.removeprefix(TRIGGER_PREFIX)
        if not owner or kind not in KINDS:
            return Ignored(f"not a chat tester event ({event.trigger}, owner {owner!r})")
        if kind == "slack":
            result = self._slack(event, owner)
        elif kind == "whatsapp":
            result = await self._whatsapp(owner).process(event)
        else:
            result = await self._email(owner).process(event)
        if isinstance(result, Ignored):
            return result
        return [to_console(request, kind, owner, event.id) for request in result]

    def _slack(self, event: StoredEvent, owner: str) -> ProcessingResult:
        """What ``SlackProcessor._message`` does for a DM (``users.info`` not needed: the event
        carries the sender's profile)."""
        body = json.loads(event.body)
        message = body["event"]
        reason = ignored_because(message, None)
        if reason is not None:
            return Ignored(reason)
        settings = slack_settings(self._deps, owner)
        chosen = choose_workflow(settings, channel=str(message["channel"]), text=message["text"])
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

    def _whatsapp(self, owner: str) -> WhatsAppProcessor:
        deps = self._deps
        settings = whatsapp_settings(deps, owner)
        media = MediaFetcher(
            deps.http,
            deps.files,
            account_sid=TWILIO_ACCOUNT,
            auth_token="",  # the tester's messages carry no media to fetch
            owner_id=owner,
            timeout=settings.media_timeout,
            api_url=settings.api_url,
        )
        return WhatsAppProcessor(settings, media, self._log, deps.ensure_owner)

    def _email(self, owner: str) -> EmailProcessor:
        deps = self._deps
        return EmailProcessor(
            email_settings(deps, owner),
            via="console",
            files=deps.files,
            threads=self._threads,
            clock=deps.clock,
        )


def to_console(request: RunRequest, kind: str, owner: str, event_id: str) -> RunRequest:
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
