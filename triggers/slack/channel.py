"""The Slack channel in the one Channel form (``core.channels``): name ``slack``, prefix ``/slack``.

Built when the application is built (its edge must be mounted before the server starts), from
``[slack]`` and a provider of what the running services share; :meth:`SlackChannel.start` takes
those, opens the Web API connection pool and registers its teardown on the stack.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import TypeVar

import aiohttp
import httpx
from aiohttp import web
from slack_sdk.web.async_client import AsyncWebClient

from core.clock import Clock
from core.db import Database
from core.inbox import EventProcessor, Inbox, TriggerHealth
from core.models import RunRecord
from core.ports import RunHistory, Sender
from triggers.files import FileStore
from triggers.slack.edge import TRIGGER, EdgeDeps, SlackEdge
from triggers.slack.installations import BotTokens, SlackInstallations, SlackOAuthStates
from triggers.slack.process import ProcessDeps, SlackProcessor
from triggers.slack.sender import Reactions, SlackSender
from triggers.slack.settings import SlackSettings
from triggers.slack.socket import SOCKET_TRIGGER, SlackSocket, SocketDeps


def configured_triggers(settings: SlackSettings) -> list[str]:
    """``slack`` where the HTTP routes are on, ``slack:socket`` in Socket Mode."""
    names = [TRIGGER] if settings.http_routes else []
    return [*names, SOCKET_TRIGGER] if settings.socket_mode else names


@dataclass(frozen=True, slots=True)
class SlackDeps:
    """What the channel takes from the running services."""

    database: Database
    history: RunHistory
    clock: Clock
    http: httpx.AsyncClient
    files: FileStore
    """where inbound files are copied to and reply attachments read from"""
    inbox: Inbox
    public_url: str
    delivery_attempts: int
    """the outbox's ``[delivery] max_attempts``: after the last the sender shows the failure"""


_T = TypeVar("_T")


class SlackChannel:
    """Implements :class:`core.channels.Channel` for Slack (Events API over HTTP or Socket Mode,
    commands, replies); ``listen`` (the web role) holds the Socket Mode connection."""

    name = "slack"
    prefix = "/slack"

    def __init__(
        self, settings: SlackSettings, deps: Callable[[], SlackDeps], *, listen: bool = True
    ) -> None:
        self._settings = settings
        self._deps = deps
        self._listen = listen
        self._edge = SlackEdge(settings)
        self._socket: SlackSocket | None = None
        self._app: web.Application | None = None
        self._processor: SlackProcessor | None = None
        self._sender: SlackSender | None = None

    def edge(self) -> web.Application | None:
        """``None`` in Socket Mode without OAuth: no HTTP route to serve."""
        if not (self._settings.http_routes or self._settings.oauth_enabled):
            return None
        if self._app is None:
            self._app = self._edge.app()
        return self._app

    @property
    def processors(self) -> Mapping[str, EventProcessor]:
        """One processing for both transports: the stored bodies are the same payloads."""
        processor = self._started(self._processor)
        names = configured_triggers(self._settings)
        return dict.fromkeys(names, processor)

    @property
    def socket(self) -> SlackSocket | None:
        """This node's Socket Mode connection (web nodes with ``socket_mode``)."""
        return self._socket

    @property
    def sender(self) -> Sender | None:
        return self._sender

    @property
    def slack_sender(self) -> SlackSender:
        """The sender with its Slack-only parts (tests send a delivery directly)."""
        return self._started(self._sender)

    async def start(self, stack: AsyncExitStack) -> None:
        deps = self._deps()
        settings = self._settings
        installations = SlackInstallations(deps.database, deps.clock)
        oauth_states = SlackOAuthStates(deps.database, deps.clock)
        redirect_uri = settings.redirect_uri or f"{deps.public_url}{self.prefix}/oauth_redirect"
        # One connection pool for every Web API call (slack_sdk opens a session per call without).
        session = aiohttp.ClientSession()
        stack.push_async_callback(session.close)
        bot_token = settings.bot_token.get_secret_value() if settings.bot_token else None
        tokens = BotTokens(
            installations, AsyncWebClient(base_url=settings.api_url, session=session), bot_token
        )
        tokens.warm_up()
        stack.push_async_callback(tokens.aclose)
        reactions = Reactions()
        stack.push_async_callback(reactions.aclose)
        self._sender = SlackSender(
            tokens,
            deps.http,
            settings,
            reactions,
            session,
            deps.files,
            delivery_attempts=deps.delivery_attempts,
        )
        self._processor = SlackProcessor(
            settings,
            ProcessDeps(
                database=deps.database,
                history=deps.history,
                files=deps.files,
                clock=deps.clock,
                http=deps.http,
                installations=installations,
                oauth_states=oauth_states,
                tokens=tokens,
                session=session,
                redirect_uri=redirect_uri,
            ),
        )
        self._edge.attach(
            EdgeDeps(
                inbox=deps.inbox,
                clock=deps.clock,
                installations=installations,
                oauth_states=oauth_states,
                redirect_uri=redirect_uri,
            )
        )
        if settings.socket_mode and self._listen:
            self._socket = SlackSocket(settings, SocketDeps(deps.inbox, deps.clock, session))
            await self._socket.start(stack)

    def run_started(self, run: RunRecord) -> None:
        """``:eyes:`` on the message the run answers (in the background, drained on stop)."""
        if self._sender is not None:
            self._sender.working(run.reply_target)

    async def health(self, trigger: TriggerHealth) -> Mapping[str, object]:
        if trigger.name == SOCKET_TRIGGER and self._socket is not None:
            return self._socket.details()
        return {}

    @staticmethod
    def _started(part: _T | None) -> _T:
        if part is None:
            raise RuntimeError("the Slack channel is not started")
        return part
