"""The configured channels (``core.channels.Channel``), built once by the composition root.

Each channel package adds one line to :func:`configured_channels`; the rest of the wiring
iterates the list: the inbox learns each channel's trigger names, worker nodes hand its
processors to the inbox processor.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import httpx

from core.channels import Channel
from core.clock import Clock
from core.db import Database
from core.inbox import Inbox
from core.ports import RunGateway
from core.security import Signer
from switchboard.settings import Settings
from triggers.email.channel import EmailChannel, EmailDeps
from triggers.files import FileStore


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


@dataclass(slots=True)
class LateParts:
    """The parts of channels built with the server (their edges are mounted before it
    starts), filled by ``open_services`` before any channel uses them."""

    parts: ChannelParts | None = None

    def get(self) -> ChannelParts:
        if self.parts is None:
            raise RuntimeError("a channel asked for the services before they were opened")
        return self.parts


def edge_channels(settings: Settings, late: LateParts, *, roles: Sequence[str]) -> list[Channel]:
    """The channels with an HTTP edge or a listener, built with the application."""
    listen = "web" in roles

    def email_deps() -> EmailDeps:
        parts = late.get()
        return EmailDeps(
            database=parts.database,
            clock=parts.clock,
            files=parts.files,
            inbox=parts.inbox,
            data_dir=settings.server.data_dir,
            delivery_attempts=settings.delivery.max_attempts,
        )

    return [EmailChannel(settings.email, email_deps, listen=listen)]


def configured_channels(parts: ChannelParts) -> list[Channel]:
    """The channels the settings enable, one line each."""
    channels: list[Channel] = []
    return channels
