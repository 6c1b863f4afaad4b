"""The Slack channel's parts, built once from ``[slack]``: the composition root calls
:func:`open_slack` (sender for the outbox) and :meth:`SlackChannel.routes` (aiohttp handlers)."""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp
import httpx
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.web.async_client import AsyncWebClient

from core.clock import Clock
from core.db import Database
from core.ports import RunGateway
from triggers.files import FileStore
from triggers.slack.installations import BotTokens, SlackInstallations, SlackOAuthStates
from triggers.slack.intake import IntakeDeps, SlackIntake
from triggers.slack.sender import Reactions, SenderSettings, SlackSender
from triggers.slack.settings import SlackSettings

SLACK_ROUTES: tuple[tuple[str, str, str], ...] = (
    ("POST", "/slack/events", "events"),
    ("POST", "/slack/commands", "events"),
    ("GET", "/slack/install", "install"),
    ("GET", "/slack/oauth_redirect", "oauth_redirect"),
)
"""(method, path, handler method of :class:`SlackRoutes`)."""


@dataclass(frozen=True, slots=True)
class SlackChannel:
    settings: SlackSettings
    database: Database
    clock: Clock
    http: httpx.AsyncClient
    installations: SlackInstallations
    tokens: BotTokens
    reactions: Reactions
    sender: SlackSender
    session: aiohttp.ClientSession
    """One connection pool for every Web API call (slack_sdk opens a session per call without)."""

    def routes(self, gateway: RunGateway, files: FileStore, *, public_url: str) -> SlackRoutes:
        intake = SlackIntake(
            self.settings,
            IntakeDeps(
                gateway=gateway,
                database=self.database,
                files=files,
                clock=self.clock,
                http=self.http,
            ),
            self.tokens,
            self.installations,
            oauth_states=SlackOAuthStates(self.database, self.clock),
            redirect_uri=self.settings.redirect_uri or f"{public_url}/slack/oauth_redirect",
            session=self.session,
        )
        return SlackRoutes(intake)

    async def aclose(self) -> None:
        await self.tokens.aclose()
        await self.reactions.aclose()
        await self.session.close()


def open_slack(
    settings: SlackSettings,
    database: Database,
    clock: Clock,
    http: httpx.AsyncClient,
    *,
    files: FileStore,
    delivery_attempts: int,
) -> SlackChannel:
    """The channel's parts; ``files``: where reply attachments are read from;
    ``delivery_attempts`` is the outbox's ``[delivery] max_attempts``
    (after the last one the sender shows the failure reaction)."""
    installations = SlackInstallations(database, clock)
    bot_token = settings.bot_token.get_secret_value() if settings.bot_token else None
    session = aiohttp.ClientSession()
    client = AsyncWebClient(base_url=settings.api_url, session=session)
    tokens = BotTokens(installations, client, bot_token)
    tokens.warm_up()
    reactions = Reactions()
    sender = SlackSender(
        tokens,
        http,
        SenderSettings(
            api_url=settings.api_url,
            message_limit=settings.message_limit,
            channel_interval=settings.channel_interval,
            working_reaction=settings.working_reaction,
            done_reaction=settings.done_reaction,
            failed_reaction=settings.failed_reaction,
            delivery_attempts=delivery_attempts,
        ),
        reactions,
        session,
        files,
    )
    return SlackChannel(
        settings=settings,
        database=database,
        clock=clock,
        http=http,
        installations=installations,
        tokens=tokens,
        reactions=reactions,
        sender=sender,
        session=session,
    )


class SlackRoutes:
    """aiohttp handlers: bolt's adapter converts the request, bolt verifies and dispatches."""

    def __init__(self, intake: SlackIntake) -> None:
        self._intake = intake

    async def events(self, request: web.Request) -> web.Response:
        bolt_request = self._intake.checked_request(
            await request.read(),
            request.headers,
            content_type=request.content_type,
            charset=request.charset,
            query=request.query_string,
        )
        return await to_aiohttp_response(await self._intake.dispatch(bolt_request))

    async def install(self, request: web.Request) -> web.Response:
        flow = self._intake.oauth_flow
        if flow is None:
            raise web.HTTPNotFound(text="OAuth install is not configured ([slack] client_id)")
        return await to_aiohttp_response(await flow.handle_installation(_bodiless(request)))

    async def oauth_redirect(self, request: web.Request) -> web.Response:
        flow = self._intake.oauth_flow
        if flow is None:
            raise web.HTTPNotFound(text="OAuth install is not configured ([slack] client_id)")
        return await to_aiohttp_response(await flow.handle_callback(_bodiless(request)))


def _bodiless(request: web.Request) -> AsyncBoltRequest:
    """Bolt's request for a GET of the install flow: its query and headers, never a body (bolt's
    adapter would decode one in whatever charset it claims, a 500 for an unknown one)."""
    return AsyncBoltRequest(body="", query=request.query_string, headers=dict(request.headers))
