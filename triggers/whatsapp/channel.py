"""The WhatsApp channel (``core.channels.Channel``): Twilio's webhooks in, its Messages API out.

Built once from ``[whatsapp]``; the composition root mounts :meth:`WhatsAppChannel.edge` at
``/twilio`` on web nodes, gives the inbox processor :attr:`~WhatsAppChannel.processors` and the
outbox :attr:`~WhatsAppChannel.sender` on worker nodes, and starts it on its exit stack (which
closes the two HTTP clients: media downloads, Twilio's REST API).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass

import httpx
from aiohttp import web
from twilio.rest import Client

from core.clock import Clock
from core.db import Database
from core.inbox import AcceptedEvent, ArrivingEvent, EventProcessor, Inbox, TriggerHealth
from core.models import RunRecord
from core.ports import ChatActivity, DeliveryFailures
from triggers.files import FileStore
from triggers.whatsapp.edge import PREFIX, TRIGGER, TwilioSignature, WhatsAppEdge
from triggers.whatsapp.media import MediaFetcher
from triggers.whatsapp.message_log import MessageLog
from triggers.whatsapp.process import WhatsAppProcessor
from triggers.whatsapp.sender import WhatsAppSender
from triggers.whatsapp.settings import WhatsAppSettings
from triggers.whatsapp.twilio_http import TwilioHttpClient


@dataclass(frozen=True, slots=True)
class WhatsAppDeps:
    """What the channel takes from the running services when it starts."""

    inbox: Inbox
    files: FileStore
    database: Database
    clock: Clock
    ensure_owner: Callable[[str], Awaitable[object]]
    chats: ChatActivity
    delivery_failures: DeliveryFailures


class WhatsAppChannel:
    """The channel ``whatsapp``: trigger ``whatsapp``, edge ``/twilio/whatsapp|status``.

    Built with the application (its edge is mounted before the server starts); the parts that
    need the running services are made by :meth:`start`."""

    name = "whatsapp"
    prefix = PREFIX

    def __init__(
        self, settings: WhatsAppSettings, public_url: str, deps: Callable[[], WhatsAppDeps]
    ) -> None:
        if settings.account_sid is None or settings.auth_token is None:
            raise ValueError("[whatsapp] account_sid and auth_token are required")
        self._account_sid = settings.account_sid
        self._auth_token = settings.auth_token.get_secret_value()
        self._settings = settings
        self._public_url = public_url
        self._deps = deps
        self._processor: WhatsAppProcessor | None = None
        self._sender: WhatsAppSender | None = None
        self._app: web.Application | None = None
        self._inbox = _StartedInbox()

    async def start(self, stack: AsyncExitStack) -> None:
        settings, deps = self._settings, self._deps()
        self._inbox.inbox = deps.inbox
        auth_token = self._auth_token
        media_http = httpx.AsyncClient(follow_redirects=True, timeout=settings.media_timeout)
        stack.push_async_callback(media_http.aclose)
        api_http = TwilioHttpClient(settings.api_url, settings.send_timeout)
        stack.push_async_callback(api_http.close)
        log = MessageLog(deps.database, deps.clock, deps.delivery_failures)
        self._processor = WhatsAppProcessor(
            settings,
            MediaFetcher(
                media_http,
                deps.files,
                account_sid=self._account_sid,
                auth_token=auth_token,
                owner_id=settings.owner,
                timeout=settings.media_timeout,
                api_url=settings.api_url,
            ),
            log,
            deps.ensure_owner,
        )
        # Explicit credentials; edge/region rewrite hostnames (and would come from TWILIO_* vars).
        client = Client(self._account_sid, auth_token, http_client=api_http)
        client.edge = client.region = None
        self._sender = WhatsAppSender(
            client,
            settings,
            deps.chats,
            deps.clock,
            log,
            status_callback=self._public_url.rstrip("/") + PREFIX + "/status",
        )

    def edge(self) -> web.Application:
        if self._app is None:
            signature = TwilioSignature(self._auth_token, self._public_url)
            self._app = WhatsAppEdge(self._inbox, signature).app()
        return self._app

    @property
    def processors(self) -> Mapping[str, EventProcessor]:
        if self._processor is None:
            raise RuntimeError("the WhatsApp channel is not started")
        return {TRIGGER: self._processor}

    @property
    def sender(self) -> WhatsAppSender | None:
        return self._sender

    def run_started(self, run: RunRecord) -> None:
        """WhatsApp shows nothing while a run works."""

    async def health(self, trigger: TriggerHealth) -> Mapping[str, object]:
        return {}


class _StartedInbox:
    """The services' inbox once the channel started: the edge is mounted before it exists."""

    inbox: Inbox | None = None

    async def accept(self, event: ArrivingEvent) -> AcceptedEvent:
        if self.inbox is None:
            raise web.HTTPServiceUnavailable(text="the WhatsApp channel is starting")
        return await self.inbox.accept(event)
