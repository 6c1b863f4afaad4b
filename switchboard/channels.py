"""The configured channels (core.channels), built with the application, started with the services.

A channel's edge is mounted when the application is built, before any service runs; what the
channel needs of the running services (the database, the inbox, the file store) it takes from
:class:`SharedServices` when it starts, which :func:`switchboard.services.open_services` fills
first. Run-started events go to the channel the run's reply is for (Slack's ``:eyes:``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import httpx

from core.channels import Channel
from core.clock import Clock
from core.db import Database
from core.inbox import AcceptedEvent, ArrivingEvent, EventProcessor, Ignored, Inbox, StoredEvent
from core.models import RunRecord
from core.ports import RunGateway, RunHistory
from switchboard.settings import Settings
from triggers.files import FileStore
from triggers.slack.channel import SlackChannel, SlackDeps

_T = TypeVar("_T")


def _need(part: _T | None) -> _T:
    if part is None:
        raise RuntimeError("a channel started before the services it needs")
    return part


@dataclass(slots=True)
class SharedServices:
    """What the running services lend the channels; set by ``open_services`` before they start."""

    database: Database | None = None
    history: RunHistory | None = None
    clock: Clock | None = None
    http: httpx.AsyncClient | None = None
    files: FileStore | None = None
    inbox: Inbox | None = None


def configured_channels(settings: Settings, shared: SharedServices) -> list[Channel]:
    """Every channel ``settings`` enables, in start order."""
    channels: list[Channel] = []
    if settings.slack.enabled:

        def slack_deps() -> SlackDeps:
            return SlackDeps(
                database=_need(shared.database),
                history=_need(shared.history),
                clock=_need(shared.clock),
                http=_need(shared.http),
                files=_need(shared.files),
                inbox=_need(shared.inbox),
                public_url=settings.server.base_url(),
                delivery_attempts=settings.delivery.max_attempts,
            )

        channels.append(SlackChannel(settings.slack, slack_deps))
    return channels


def run_started_to(channels: Sequence[Channel]) -> Callable[[RunRecord], None]:
    """The workers' run-started hook: to the channel named by the run's reply target."""
    by_name = {channel.name: channel for channel in channels}

    def run_started(run: RunRecord) -> None:
        target = run.reply_target or {}
        channel = by_name.get(str(target.get("channel") or ""))
        if channel is not None:
            channel.run_started(run)

    return run_started


@dataclass(slots=True)
class DirectInbox:
    """Until the durable inbox (dispatch) lands: processes an event on ``accept``, one at a
    time per ordering key, and submits its run requests before the edge acknowledges, so
    nothing acknowledged is lost. Dedupe keys are remembered in this process only."""

    processors: Mapping[str, EventProcessor] = field(default_factory=dict)
    gateway: RunGateway | None = None
    clock: Clock | None = None
    _seen: dict[str, AcceptedEvent] = field(default_factory=dict)
    _locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    _count: int = 0

    async def accept(self, event: ArrivingEvent) -> AcceptedEvent:
        async with self._one_at_a_time(event.ordering_key):
            if event.dedupe_key is not None and event.dedupe_key in self._seen:
                earlier = self._seen[event.dedupe_key]
                return AcceptedEvent(earlier.id, duplicate=True, held=False)
            self._count += 1
            stored = StoredEvent(
                id=f"evt_{self._count}",
                trigger=event.trigger,
                ordering_key=event.ordering_key,
                body=event.body,
                headers=dict(event.headers),
                received_at=_need(self.clock).now(),
                dedupe_key=event.dedupe_key,
            )
            result = await self.processors[event.trigger].process(stored)
            if not isinstance(result, Ignored):
                gateway = _need(self.gateway)
                for request in result:
                    await gateway.submit(request)
            accepted = AcceptedEvent(stored.id, duplicate=False, held=False)
            if event.dedupe_key is not None:
                self._seen[event.dedupe_key] = accepted
            return accepted

    @contextlib.asynccontextmanager
    async def _one_at_a_time(self, key: str) -> AsyncIterator[None]:
        lock = self._locks.setdefault(key, asyncio.Lock())
        try:
            async with lock:
                yield
        finally:
            if not lock.locked() and self._locks.get(key) is lock:
                del self._locks[key]
