"""The WhatsApp channel (``core.channels.Channel``): Twilio's webhooks in, its Messages API out.

Built once from ``[whatsapp]``; the composition root mounts :meth:`WhatsAppChannel.edge` at
``/twilio`` on web nodes, gives the inbox processor :attr:`~WhatsAppChannel.processors` and the
outbox :attr:`~WhatsAppChannel.sender` on worker nodes, and starts it on its exit stack (which
closes the two HTTP clients: media downloads, Twilio's REST API).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from contextlib import AsyncExitStack

import httpx
from aiohttp import web
from twilio.rest import Client

from core.clock import Clock
from core.db import Database
from core.inbox import EventProcessor, Inbox, TriggerHealth
from core.models import RunRecord
from triggers.files import FileStore
from triggers.whatsapp.edge import PREFIX, TRIGGER, TwilioSignature, WhatsAppEdge
from triggers.whatsapp.media import MediaFetcher
from triggers.whatsapp.message_log import MessageLog
from triggers.whatsapp.process import WhatsAppProcessor
from triggers.whatsapp.sender import WhatsAppSender
from triggers.whatsapp.settings import WhatsAppSettings
from triggers.whatsapp.twilio_http import TwilioHttpClient


class WhatsAppChannel:
    """The channel ``whatsapp``: trigger ``whatsapp``, edge ``/twilio/whatsapp|status``."""

    name = "whatsapp"
    prefix = PREFIX

    def __init__(
        self,
        settings: WhatsAppSettings,
        *,
        inbox: Inbox,
        files: FileStore,
        database: Database,
        clock: Clock,
        public_url: str,
        ensure_owner: Callable[[str], Awaitable[object]],
    ) -> None:
        if settings.account_sid is None or settings.auth_token is None:
            raise ValueError("[whatsapp] account_sid and auth_token are required")
        auth_token = settings.auth_token.get_secret_value()
        self._edge = WhatsAppEdge(inbox, TwilioSignature(auth_token, public_url))
        self._media_http = httpx.AsyncClient(follow_redirects=True, timeout=settings.media_timeout)
        log = MessageLog(database, clock)
        self._processor = WhatsAppProcessor(
            settings,
            MediaFetcher(
                self._media_http,
                files,
                account_sid=settings.account_sid,
                auth_token=auth_token,
                owner_id=settings.owner,
                timeout=settings.media_timeout,
                api_url=settings.api_url,
            ),
            log,
            ensure_owner,
        )
        self._api_http = TwilioHttpClient(settings.api_url, settings.send_timeout)
        # Explicit credentials; edge/region rewrite hostnames (and would come from TWILIO_* vars).
        client = Client(settings.account_sid, auth_token, http_client=self._api_http)
        client.edge = client.region = None
        self._sender = WhatsAppSender(
            client,
            settings,
            database,
            clock,
            log,
            status_callback=public_url.rstrip("/") + PREFIX + "/status",
        )

    async def start(self, stack: AsyncExitStack) -> None:
        stack.push_async_callback(self._api_http.close)
        stack.push_async_callback(self._media_http.aclose)

    def edge(self) -> web.Application:
        return self._edge.app()

    @property
    def processors(self) -> Mapping[str, EventProcessor]:
        return {TRIGGER: self._processor}

    @property
    def sender(self) -> WhatsAppSender:
        return self._sender

    def run_started(self, run: RunRecord) -> None:
        """WhatsApp shows nothing while a run works."""

    async def health(self, trigger: TriggerHealth) -> Mapping[str, object]:
        return {}
