"""The chat tester's :class:`core.inbox.EventProcessor`: each channel's own processing of the
event the tester wrote, then the reply target handed to the console (``console/chat_channel.py``).

Each channel's processor itself runs (:class:`SlackProcessor`: bolt's dispatch and listeners;
:class:`WhatsAppProcessor`; :class:`EmailProcessor`), with the tester's settings (owner, default
workflow). Bolt's authorize step learns who the bot is in the tester's workspace from
:class:`TesterWorkspace`, not from ``auth.test``: that workspace exists only here.
"""

from __future__ import annotations

from typing import Any

import aiohttp
from slack_bolt.authorization import AuthorizeResult
from slack_sdk.web.async_client import AsyncWebClient

from console.chat_parts import (
    BOT_USER,
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
from triggers.slack.installations import BotTokens, SlackInstallations, SlackOAuthStates
from triggers.slack.process import ProcessDeps, SlackProcessor
from triggers.whatsapp.media import MediaFetcher
from triggers.whatsapp.message_log import MessageLog
from triggers.whatsapp.process import WhatsAppProcessor


class ChatProcessor:
    """The ``console:<kind>`` triggers' processor (one for the three)."""

    def __init__(
        self, deps: ChatDeps, threads: ThreadStore, session: aiohttp.ClientSession
    ) -> None:
        self._deps = deps
        self._threads = threads
        self._log = MessageLog(deps.database, deps.clock, deps.delivery_failures)
        self._session = session
        installations = SlackInstallations(deps.database, deps.clock)
        self.workspace = TesterWorkspace(installations, AsyncWebClient(session=session), None)
        self._installations = installations
        self._oauth_states = SlackOAuthStates(deps.database, deps.clock)
        self._slack: dict[str, SlackProcessor] = {}

    async def process(self, event: StoredEvent) -> ProcessingResult:
        owner = event.headers.get(OWNER_HEADER, "")
        kind = event.trigger.removeprefix(TRIGGER_PREFIX)
        if not owner or kind not in KINDS:
            return Ignored(f"not a chat tester event ({event.trigger}, owner {owner!r})")
        if kind == "slack":
            result = await self._slack_of(owner).process(event)
        elif kind == "whatsapp":
            result = await self._whatsapp(owner).process(event)
        else:
            result = await self._email(owner).process(event)
        if isinstance(result, Ignored):
            return result
        return [to_console(request, kind, owner, event.id) for request in result]

    def _slack_of(self, owner: str) -> SlackProcessor:
        """The owner's Slack processor (bolt's app is built once per owner)."""
        processor = self._slack.get(owner)
        if processor is None:
            deps = self._deps
            processor = SlackProcessor(
                slack_settings(deps, owner),
                ProcessDeps(
                    database=deps.database,
                    history=deps.history,
                    files=deps.files,
                    clock=deps.clock,
                    http=deps.http,
                    installations=self._installations,
                    oauth_states=self._oauth_states,
                    tokens=self.workspace,
                    session=self._session,
                    redirect_uri="",
                ),
            )
            self._slack[owner] = processor
        return processor

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


class TesterWorkspace(BotTokens):
    """The tester's Slack workspace (team ``console``) and its bot, as bolt's authorize step
    asks for them: known here, never asked of Slack, and no other workspace."""

    async def for_workspace(
        self, enterprise_id: str | None, team_id: str | None, *, enterprise_install: bool = False
    ) -> AuthorizeResult | None:
        if team_id != TEAM or enterprise_id or enterprise_install:
            return None
        return tester_bot()


def tester_bot() -> AuthorizeResult:
    identity: dict[str, Any] = {
        "enterprise_id": None,
        "team_id": TEAM,
        "bot_token": "xoxb-console-tester",  # never sent: the window is local
        "bot_id": "BCONSOLE",
        "bot_user_id": BOT_USER,
    }
    return AuthorizeResult(**identity)
