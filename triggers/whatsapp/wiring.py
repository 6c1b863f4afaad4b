"""What the composition root calls: the WhatsApp sender, the intake, and their routes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from twilio.rest import Client

from core.clock import Clock
from core.db import Database
from core.ports import RunGateway
from triggers.files import FileStore
from triggers.whatsapp.held import HeldMessages
from triggers.whatsapp.intake import TwilioSignature, WhatsAppIntake
from triggers.whatsapp.media import MediaFetcher
from triggers.whatsapp.sender import WhatsAppSender
from triggers.whatsapp.settings import WhatsAppSettings
from triggers.whatsapp.status import MessageLog
from triggers.whatsapp.twilio_http import TwilioHttpClient

WHATSAPP_ROUTES: tuple[tuple[str, str, str], ...] = (
    ("POST", "/twilio/whatsapp", "accept_message"),
    ("POST", "/twilio/status", "accept_status"),
)
"""(method, path, handler method of :class:`WhatsAppIntake`)."""


def _credentials(settings: WhatsAppSettings) -> tuple[str, str]:
    if settings.account_sid is None or settings.auth_token is None:
        raise ValueError("[whatsapp] account_sid and auth_token are required")
    return settings.account_sid, settings.auth_token.get_secret_value()


@asynccontextmanager
async def open_whatsapp_sender(
    settings: WhatsAppSettings, database: Database, clock: Clock, *, public_url: str
) -> AsyncIterator[WhatsAppSender]:
    """The sender, with twilio-python's aiohttp client (closed on exit)."""
    account_sid, auth_token = _credentials(settings)
    http = TwilioHttpClient(settings.api_url, settings.send_timeout)
    # Explicit credentials; edge/region rewrite hostnames (and would come from TWILIO_* variables).
    client = Client(account_sid, auth_token, http_client=http)
    client.edge = client.region = None
    try:
        yield WhatsAppSender(
            client,
            settings,
            database,
            clock,
            status_callback=public_url.rstrip("/") + "/twilio/status",
        )
    finally:
        await http.close()


@asynccontextmanager
async def open_whatsapp_intake(
    settings: WhatsAppSettings,
    gateway: RunGateway,
    files: FileStore,
    database: Database,
    clock: Clock,
    *,
    public_url: str,
) -> AsyncIterator[WhatsAppIntake]:
    """The webhook handlers, with the owner of inbound media downloads and its HTTP client
    (the downloads are stopped, then the client closed, on exit)."""
    account_sid, auth_token = _credentials(settings)
    async with httpx.AsyncClient(follow_redirects=True, timeout=settings.media_timeout) as http:
        held = HeldMessages(
            gateway,
            MediaFetcher(
                http,
                files,
                account_sid=account_sid,
                auth_token=auth_token,
                owner_id=settings.owner,
                timeout=settings.media_timeout,
                api_url=settings.api_url,
            ),
            database,
            clock,
            sweep_interval=3 * settings.media_timeout,
        )
        held.start()
        try:
            yield WhatsAppIntake(
                settings=settings,
                signature=TwilioSignature(auth_token, public_url),
                gateway=gateway,
                held=held,
                log=MessageLog(database, clock),
                clock=clock,
            )
        finally:
            await held.aclose()
