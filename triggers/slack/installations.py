"""Workspaces: OAuth v2 installations and state nonces in our database, and the bot token for
each workspace (PROTOCOLS §1.8).

Bolt's ``AsyncInstallationStore`` and ``AsyncOAuthStateStore`` interfaces over our own tables,
plus :class:`WorkspaceAuthorize`, which answers bolt's "who am I in this workspace" from the
stored installation (or the single-workspace ``bot_token``) without an ``auth.test`` call per
event: the ack path stays a database lookup, cached for a minute.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from datetime import timedelta
from typing import Any

from slack_bolt.authorization import AuthorizeResult
from slack_bolt.authorization.async_authorize import AsyncAuthorize
from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.oauth.async_oauth_settings import AsyncOAuthSettings
from slack_sdk.errors import SlackApiError
from slack_sdk.oauth.installation_store import Bot, Installation
from slack_sdk.oauth.installation_store.async_installation_store import AsyncInstallationStore
from slack_sdk.oauth.state_store.async_state_store import AsyncOAuthStateStore
from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy import delete, select

from core.clock import Clock
from core.db import Database
from triggers.slack.settings import SlackSettings
from triggers.slack.tables import slack_installations, slack_oauth_states

logger = logging.getLogger(__name__)

_NOT_CONFIGURED = "oauth-not-configured"
CACHE_SECONDS = 60.0
AUTH_TEST_TIMEOUT = 2.0
"""Seconds for the single-workspace token's ``auth.test`` when an event has to ask it on its ack
path (start's question not answered yet): well inside Slack's 3 s for the whole answer."""
WARM_UP_TIMEOUT = 30.0
"""Seconds for that question asked at start, off any ack path."""
_STORED_FIELDS = (
    "app_id",
    "enterprise_id",
    "enterprise_name",
    "team_id",
    "team_name",
    "bot_token",
    "bot_id",
    "bot_user_id",
    "bot_scopes",
    "user_id",
    "user_scopes",
    "is_enterprise_install",
    "token_type",
    "installed_at",
)


def _workspace(
    enterprise_id: str | None, team_id: str | None, enterprise_install: bool | None
) -> tuple[str, str]:
    """The stored key: an org-wide install is found by its enterprise alone."""
    if enterprise_install:
        return enterprise_id or "", ""
    return enterprise_id or "", team_id or ""


class SlackInstallations(AsyncInstallationStore):
    """Installations, one per workspace (the latest install wins), in ``slack_installations``."""

    def __init__(self, database: Database, clock: Clock) -> None:
        self._db = database
        self._clock = clock
        self._cache: dict[tuple[str, str], tuple[float, Installation | None]] = {}

    @property
    def logger(self) -> logging.Logger:
        return logger

    async def async_save(self, installation: Installation) -> None:
        key = _workspace(
            installation.enterprise_id, installation.team_id, installation.is_enterprise_install
        )
        stored = {name: getattr(installation, name) for name in _STORED_FIELDS}
        values = {
            "app_id": installation.app_id,
            "bot_user_id": installation.bot_user_id,
            "bot_id": installation.bot_id,
            "bot_token": installation.bot_token,
            "installation": stored,
            "installed_at": self._clock.now(),
        }
        async with self._db.write() as conn:
            await conn.execute(
                delete(slack_installations).where(
                    slack_installations.c.enterprise_id == key[0],
                    slack_installations.c.team_id == key[1],
                )
            )
            await conn.execute(
                slack_installations.insert().values(enterprise_id=key[0], team_id=key[1], **values)
            )
        self._cache.pop(key, None)
        logger.info("slack: installed in workspace %s/%s", *key)

    async def async_save_bot(self, bot: Bot) -> None:
        raise NotImplementedError("bots are saved with their installation")

    async def async_find_installation(
        self,
        *,
        enterprise_id: str | None,
        team_id: str | None,
        user_id: str | None = None,
        is_enterprise_install: bool | None = False,
    ) -> Installation | None:
        key = _workspace(enterprise_id, team_id, is_enterprise_install)
        cached = self._cache.get(key)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        async with self._db.read() as conn:
            row = (
                await conn.execute(
                    select(slack_installations.c.installation).where(
                        slack_installations.c.enterprise_id == key[0],
                        slack_installations.c.team_id == key[1],
                    )
                )
            ).first()
        found = Installation(**row.installation) if row is not None else None
        self._cache[key] = (time.monotonic() + CACHE_SECONDS, found)
        return found

    async def async_find_bot(
        self,
        *,
        enterprise_id: str | None,
        team_id: str | None,
        is_enterprise_install: bool | None = False,
    ) -> Bot | None:
        installation = await self.async_find_installation(
            enterprise_id=enterprise_id,
            team_id=team_id,
            is_enterprise_install=is_enterprise_install,
        )
        if installation is None or installation.bot_token is None:
            return None
        return installation.to_bot()

    async def async_delete_bot(self, *, enterprise_id: str | None, team_id: str | None) -> None:
        await self.async_delete_installation(enterprise_id=enterprise_id, team_id=team_id)

    async def async_delete_installation(
        self, *, enterprise_id: str | None, team_id: str | None, user_id: str | None = None
    ) -> None:
        if user_id is not None:
            # tokens_revoked for a user's token: we keep no user tokens, and the workspace's
            # bot stays installed (only app_uninstalled or the bot token's revocation end it).
            logger.info(
                "slack: a user token was revoked in %s/%s; the bot stays", enterprise_id, team_id
            )
            return
        keys = {_workspace(enterprise_id, team_id, False), _workspace(enterprise_id, team_id, True)}
        async with self._db.write() as conn:
            for key in keys:
                await conn.execute(
                    delete(slack_installations).where(
                        slack_installations.c.enterprise_id == key[0],
                        slack_installations.c.team_id == key[1],
                    )
                )
        for key in keys:
            self._cache.pop(key, None)
        logger.info("slack: uninstalled from workspace %s/%s", enterprise_id, team_id)


class SlackOAuthStates(AsyncOAuthStateStore):
    """OAuth ``state`` nonces (CSRF): issued once, consumed once, expiring."""

    def __init__(self, database: Database, clock: Clock, *, expiration_seconds: int = 600) -> None:
        self._db = database
        self._clock = clock
        self._ttl = timedelta(seconds=expiration_seconds)

    @property
    def logger(self) -> logging.Logger:
        return logger

    async def async_issue(self, *args: Any, **kwargs: Any) -> str:
        state = secrets.token_urlsafe(32)
        async with self._db.write() as conn:
            await conn.execute(
                slack_oauth_states.insert().values(
                    state=state, expires_at=self._clock.now() + self._ttl
                )
            )
        return state

    async def async_consume(self, state: str) -> bool:
        now = self._clock.now()
        async with self._db.write() as conn:
            result = await conn.execute(
                delete(slack_oauth_states).where(
                    slack_oauth_states.c.state == state, slack_oauth_states.c.expires_at > now
                )
            )
            await conn.execute(
                delete(slack_oauth_states).where(slack_oauth_states.c.expires_at <= now)
            )
        return bool(result.rowcount)


class BotTokens:
    """The bot token (and bot identity) for a workspace: its OAuth installation, else the
    single-workspace ``bot_token``, but only for the workspace that token belongs to (its
    ``auth.test`` identity, asked once and cached) or when no workspace is known."""

    def __init__(
        self, installations: SlackInstallations, client: AsyncWebClient, bot_token: str | None
    ) -> None:
        self._installations = installations
        self._client = client
        self._bot_token = bot_token
        self._single: AuthorizeResult | None = None
        self._asking = asyncio.Lock()
        self._warming: asyncio.Task[None] | None = None

    def warm_up(self) -> None:
        """Ask ``auth.test`` now, in the background, so that the first event does not have to
        on its ack path (where a slow answer would cost Slack's 3 s)."""
        if self._bot_token is not None and self._warming is None:
            self._warming = asyncio.create_task(self._warm_up(), name="slack:auth.test")

    async def _warm_up(self) -> None:
        try:
            await self.single_workspace(timeout=WARM_UP_TIMEOUT)
        except Exception as exc:  # the first event asks again
            logger.warning("slack: auth.test at start failed (%s)", type(exc).__name__)

    async def aclose(self) -> None:
        if self._warming is not None:
            self._warming.cancel()
            await asyncio.gather(self._warming, return_exceptions=True)

    async def for_workspace(
        self, enterprise_id: str | None, team_id: str | None, *, enterprise_install: bool = False
    ) -> AuthorizeResult | None:
        """``None`` for a workspace we have no token for. Raises ``SlackApiError`` when
        ``auth.test`` refuses the single-workspace token, ``TimeoutError`` or
        ``aiohttp.ClientError`` when it cannot be asked."""
        installation = await self._installations.async_find_installation(
            enterprise_id=enterprise_id,
            team_id=team_id,
            is_enterprise_install=enterprise_install,
        )
        if installation is not None and installation.bot_token:
            return AuthorizeResult(
                enterprise_id=installation.enterprise_id,
                team_id=installation.team_id,
                bot_token=installation.bot_token,
                bot_id=installation.bot_id,
                bot_user_id=installation.bot_user_id,
                bot_scopes=installation.bot_scopes,
            )
        single = await self.single_workspace()
        if single is None:
            return None
        if enterprise_install:
            return single if enterprise_id and enterprise_id == single.enterprise_id else None
        if team_id and team_id != single.team_id:
            # Another workspace's event (or reply) must never go out with this token.
            logger.info("slack: no installation and no bot_token for workspace %s", team_id)
            return None
        return single

    async def single_workspace(
        self, *, timeout: float = AUTH_TEST_TIMEOUT
    ) -> AuthorizeResult | None:
        """The ``bot_token``'s identity, asked once at start (:meth:`warm_up`). If that has
        not answered yet, an event asks on its ack path, within :data:`AUTH_TEST_TIMEOUT`
        (waiting for the start's question included); a failure is not cached."""
        if self._bot_token is None:
            return None
        if self._single is not None:
            return self._single
        async with asyncio.timeout(timeout), self._asking:
            if self._single is None:
                identity = await self._client.auth_test(token=self._bot_token)
                self._single = AuthorizeResult.from_auth_test_response(
                    auth_test_response=identity, bot_token=self._bot_token
                )
        return self._single


class WorkspaceAuthorize(AsyncAuthorize):
    """Bolt's authorize step, answered by :class:`BotTokens` (no ``auth.test`` per event).

    ``None`` (bolt answers 200, nothing runs) for a workspace we have no token for; an
    ``auth.test`` that timed out or could not connect propagates, so bolt answers 500 and
    Slack retries the event later (nothing was stored, so nothing may be acknowledged)."""

    def __init__(self, tokens: BotTokens) -> None:
        self._tokens = tokens

    async def __call__(
        self,
        *,
        context: AsyncBoltContext,
        enterprise_id: str | None,
        team_id: str | None,
        user_id: str | None,
        **_actor: Any,
    ) -> AuthorizeResult | None:
        try:
            return await self._tokens.for_workspace(
                enterprise_id, team_id, enterprise_install=bool(context.is_enterprise_install)
            )
        except SlackApiError as exc:
            logger.error(
                "slack: the bot token was refused by auth.test: %s", exc.response.get("error")
            )
            return None


def explicit_oauth_settings(
    settings: SlackSettings,
    installations: SlackInstallations,
    states: SlackOAuthStates,
    redirect_uri: str,
) -> AsyncOAuthSettings:
    """Bolt's OAuth settings with every value given: bolt 1.x reads SLACK_CLIENT_ID/SECRET,
    SLACK_SCOPES, SLACK_USER_SCOPES, SLACK_REDIRECT_URI and SLACK_INSTALL_PATH for each one it
    is not. Without ``[slack] client_id`` the credentials are placeholders and the flow is never
    routed to."""
    secret = settings.client_secret.get_secret_value() if settings.client_secret else None
    return AsyncOAuthSettings(
        client_id=settings.client_id or _NOT_CONFIGURED,
        client_secret=secret or _NOT_CONFIGURED,
        scopes=list(settings.scopes),
        user_scopes=[],
        redirect_uri=redirect_uri,
        install_path="/slack/install",
        redirect_uri_path="/slack/oauth_redirect",
        installation_store=installations,
        state_store=states,
    )
