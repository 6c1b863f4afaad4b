"""The configured channels (``core.channels.Channel``), built with the application.

A channel's edge is mounted when the application is built, before any service runs (aiohttp
freezes a sub-application's routes when it is mounted); what the channel is built from
(:class:`ChannelParts`: the database, the inbox, the file store) it takes when it starts, from
:class:`LateParts`, which :func:`switchboard.services.open_services` fills first. Each channel
package adds one line to :func:`configured_channels`; the rest of the wiring iterates the list:
the inbox learns each channel's trigger names, worker nodes hand its processors to the inbox
processor, run-started events go to the channel the run's reply is for (Slack's ``:eyes:``).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

import httpx

from console.chat_channel import ConsoleChat
from console.chat_parts import ChatDeps, chat_triggers
from core.channels import Channel
from core.clock import Clock
from core.db import Database
from core.inbox import Inbox
from core.models import RunRecord
from core.ports import RunGateway, RunHistory, SecretValues
from core.security import Signer
from dispatch.history import DeliveryFailureWriter, RunHistoryReader
from switchboard.settings import Settings
from triggers.auth import KeyStore
from triggers.email.channel import EmailChannel, EmailDeps, email_triggers
from triggers.files import FileStore
from triggers.slack.channel import SlackChannel, SlackDeps
from triggers.slack.channel import configured_triggers as slack_triggers
from triggers.whatsapp.channel import WhatsAppChannel, WhatsAppDeps
from triggers.whatsapp.edge import TRIGGER as WHATSAPP_TRIGGER


@dataclass(frozen=True, slots=True)
class ChannelParts:
    """What a channel may be built from."""

    settings: Settings
    database: Database
    clock: Clock
    signer: Signer
    http: httpx.AsyncClient
    files: FileStore
    inbox: Inbox
    gateway: RunGateway
    history: RunHistory
    secrets: SecretValues


@dataclass(slots=True)
class LateParts:
    """The parts, once ``open_services`` has them (channels are built before, started after)."""

    parts: ChannelParts | None = None

    def __call__(self) -> ChannelParts:
        if self.parts is None:
            raise RuntimeError("a channel started before the services it is built from")
        return self.parts


def configured_channels(
    settings: Settings, parts: Callable[[], ChannelParts], *, roles: Collection[str]
) -> list[Channel]:
    """The channels the settings enable, one line each."""
    # The email channel is always there: send_email's sender, and on web nodes the SMTP intake.
    channels: list[Channel] = [
        EmailChannel(settings.email, lambda: _email(settings, parts()), listen="web" in roles)
    ]
    if settings.slack.enabled:
        channels.append(
            SlackChannel(settings.slack, lambda: _slack(parts()), listen="web" in roles)
        )
    if settings.whatsapp.enabled:
        channels.append(
            WhatsAppChannel(
                settings.whatsapp, settings.server.base_url(), lambda: _whatsapp(parts())
            )
        )
    # The console's chat tester (issue 13): on every node, answered by that node's outbox.
    channels.append(ConsoleChat(lambda: _chat(parts())))
    return channels


def configured_triggers(settings: Settings) -> list[str]:
    """The trigger names of the channels :func:`configured_channels` builds, without building
    them: a CLI command starts no channel (no SMTP port, no Slack connection) yet must know them."""
    names = email_triggers(settings.email)
    if settings.slack.enabled:
        names += slack_triggers(settings.slack)
    if settings.whatsapp.enabled:
        names.append(WHATSAPP_TRIGGER)
    return [*names, *chat_triggers()]


def _slack(parts: ChannelParts) -> SlackDeps:
    return SlackDeps(
        database=parts.database,
        history=parts.history,
        clock=parts.clock,
        http=parts.http,
        files=parts.files,
        inbox=parts.inbox,
        public_url=parts.settings.server.base_url(),
        delivery_attempts=parts.settings.delivery.max_attempts,
    )


def _email(settings: Settings, parts: ChannelParts) -> EmailDeps:
    return EmailDeps(
        database=parts.database,
        clock=parts.clock,
        files=parts.files,
        inbox=parts.inbox,
        data_dir=settings.server.data_dir,
        delivery_attempts=settings.delivery.max_attempts,
        secrets=parts.secrets,
    )


def _chat(parts: ChannelParts) -> ChatDeps:
    settings = parts.settings
    return ChatDeps(
        inbox=parts.inbox,
        database=parts.database,
        clock=parts.clock,
        files=parts.files,
        http=parts.http,
        history=parts.history,
        chats=RunHistoryReader(parts.database),
        delivery_failures=DeliveryFailureWriter(parts.clock),
        ensure_owner=KeyStore(parts.database, parts.clock).ensure_owner,
        slack=settings.slack,
        whatsapp=settings.whatsapp,
        email=settings.email,
        workflow=settings.console.chat_workflow,
        delivery_attempts=settings.delivery.max_attempts,
    )


def _whatsapp(parts: ChannelParts) -> WhatsAppDeps:
    return WhatsAppDeps(
        inbox=parts.inbox,
        files=parts.files,
        database=parts.database,
        clock=parts.clock,
        ensure_owner=KeyStore(parts.database, parts.clock).ensure_owner,
        chats=RunHistoryReader(parts.database),
        delivery_failures=DeliveryFailureWriter(parts.clock),
    )


def run_started_to(channels: Sequence[Channel]) -> Callable[[RunRecord], None]:
    """The workers' run-started hook: to the channel named by the run's reply target."""
    by_name = {channel.name: channel for channel in channels}

    def run_started(run: RunRecord) -> None:
        target = run.reply_target or {}
        channel = by_name.get(str(target.get("channel") or ""))
        if channel is not None:
            channel.run_started(run)

    return run_started
