"""The ``Channel`` port: the one form every channel package has (DESIGN §3).

A channel (``triggers/slack``, ``triggers/whatsapp``, ``triggers/email``, …) is a package laid out
the same way: ``settings.py`` (its settings section), ``edge.py`` (authenticate, compute the keys,
:meth:`core.inbox.Inbox.accept`, acknowledge), ``process.py`` (its :class:`EventProcessor` per
trigger), ``render.py`` and ``sender.py`` (replies out), and one module building its
:class:`Channel`. The composition root iterates the configured channels: it mounts each edge under
its prefix, hands the inbox processor the processors, the outbox the senders, and starts each on
the one exit stack; adding a channel touches no other channel and nothing in ``dispatch``.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AsyncExitStack
from typing import Protocol

from core.inbox import EventProcessor, TriggerHealth
from core.models import RunRecord
from core.ports import Sender


class Component(Protocol):
    """One lifecycle convention for every long-lived part (APScheduler's ``start``).

    ``start`` acquires what the component needs and registers its own teardown on ``stack``
    (``stack.push_async_callback``, ``await stack.enter_async_context``); the composition root
    starts components in dependency order on one stack, which tears them down in reverse.
    """

    async def start(self, stack: AsyncExitStack) -> None: ...


class Channel(Component, Protocol):
    """A source of events and a destination of replies, of one kind (``slack``, ``whatsapp``…).

    ``name`` is the :class:`core.models.ReplyTarget` channel its sender serves. ``edge`` is an
    ``aiohttp.web.Application`` (typed ``object``: ``core`` imports no web library) holding the
    channel's HTTP routes, mounted by the composition root at ``prefix``, with its resources in
    its own ``cleanup_ctx``; ``None`` for a channel with no HTTP edge on this node. A listener
    edge (SMTP, Socket Mode, IMAP) is started by :meth:`start`. ``processors`` maps each trigger
    name of the channel to its processor; ``sender`` is ``None`` for a channel that sends nothing.
    """

    @property
    def name(self) -> str: ...

    @property
    def prefix(self) -> str: ...

    def edge(self) -> object | None: ...

    @property
    def processors(self) -> Mapping[str, EventProcessor]: ...

    @property
    def sender(self) -> Sender | None: ...

    def run_started(self, run: RunRecord) -> None:
        """A worker of this node starts ``run`` whose reply goes to this channel (Slack shows
        ``:eyes:``); must not block: schedule the work, owned by the channel, drained on stop."""
        ...

    async def health(self, trigger: TriggerHealth) -> Mapping[str, object]:
        """What the channel adds to ``trigger``'s health (``TriggerHealth.details``)."""
        ...
