"""The configured channels (``core.channels.Channel``), built once by the composition root.

Each channel package adds one line to :func:`configured_channels`; the rest of the wiring
iterates the list: the inbox learns each channel's trigger names, worker nodes hand its
processors to the inbox processor.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from core.channels import Channel
from core.clock import Clock
from core.db import Database
from core.inbox import Inbox
from core.ports import RunGateway
from core.security import Signer
from switchboard.settings import Settings
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


def configured_channels(parts: ChannelParts) -> list[Channel]:
    """The channels the settings enable, one line each."""
    channels: list[Channel] = []
    return channels
