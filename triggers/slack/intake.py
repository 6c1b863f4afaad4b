"""Slack intake: Events API and slash commands through slack-bolt, persisted before the ack.

Bolt runs with ``process_before_response=True``, so the HTTP answer goes back only when the
listener returned: every listener awaits ``RunGateway.submit`` (committed, group-committed with
other intakes) before that, and an event whose run could not be stored gets a 500 (Slack retries
it) instead of a 200 that would lose it (DESIGN §1). Nothing slow runs before the ack besides the
commit: the sender's name comes from a cache (``users.info`` once per user, short timeout) and
attached files are copied into our file store under a deadline.

Exactly once (PROTOCOLS §1.3): the run's idempotency key is ``slack:<team>:<channel>:<ts>``, the
user message itself; the ``app_mention`` and ``message`` deliveries of one message and every
retry (``X-Slack-Retry-Num``) carry the same channel and ts, so they find the run the first one
made. Repeats are recognised before any work (``users.info``, file copies): by the message keys
and event ids this process accepted lately (:class:`RecentMessages`, twins in flight wait for
each other), and for retries and messages with files by the key in the database. Every event
type has a listener (a no-op for the ones we do not answer): bolt would
otherwise answer 404, which Slack counts as a failure and retries.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import aiohttp
import httpx
from slack_bolt.async_app import AsyncApp
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.oauth.async_oauth_flow import AsyncOAuthFlow
from slack_bolt.oauth.async_oauth_settings import AsyncOAuthSettings
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy import select

from core.clock import Clock
from core.db import Database
from core.errors import BadRequest, Unauthorized
from core.json_input import parse_json
from core.messages import Attachment
from core.ports import RunGateway
from core.tables import runs
from triggers.files import FileStore
from triggers.slack.hosts import slack_file_url
from triggers.slack.installations import (
    BotTokens,
    SlackInstallations,
    SlackOAuthStates,
    WorkspaceAuthorize,
)
from triggers.slack.messages import (
    choose_workflow,
    command_run_request,
    event_run_request,
    ignored_because,
    mentions,
    message_from_command,
    message_from_event,
    message_key,
    strip_mention,
    team_of,
)
from triggers.slack.recent import RecentMessages
from triggers.slack.settings import SlackSettings

logger = logging.getLogger(__name__)

SIGNATURE_MAX_AGE = 300
"""Seconds a signed request stays valid (PROTOCOLS §1.1: the five-minute replay window)."""
NAME_LOOKUP_TIMEOUT = 1.0
NAME_CACHE_SECONDS = 3600.0
FILES_DEADLINE = 1.5
_NOT_CONFIGURED = "oauth-not-configured"


@dataclass(frozen=True, slots=True)
class IntakeDeps:
    gateway: RunGateway
    database: Database
    files: FileStore
    clock: Clock
    http: httpx.AsyncClient


class SlackIntake:
    """The bolt app and its listeners: each mention, DM or command becomes one run."""

    def __init__(
        self,
        settings: SlackSettings,
        deps: IntakeDeps,
        tokens: BotTokens,
        installations: SlackInstallations,
        *,
        oauth_states: SlackOAuthStates,
        redirect_uri: str,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        if settings.signing_secret is None:
            raise ValueError("the Slack intake needs [slack] signing_secret")
        self._settings = settings
        self._signing_secret = settings.signing_secret.get_secret_value().encode()
        self._deps = deps
        self._names: dict[str, tuple[float, str | None]] = {}
        self._recent = RecentMessages()
        oauth = explicit_oauth_settings(settings, installations, oauth_states, redirect_uri)
        self.oauth_flow = AsyncOAuthFlow(settings=oauth) if settings.oauth_enabled else None
        """The install flow, or ``None`` without ``[slack] client_id`` (``/slack/install`` 404s)."""
        # Every value bolt 1.x would take from the environment is given (STYLE 4): the signing
        # secret; a client without a token (each request gets its workspace's token from
        # authorize, so SLACK_BOT_TOKEN is never used nor auth.test called on bolt's own); an
        # OAuth settings object always (without one bolt builds an install flow from
        # SLACK_CLIENT_ID/SECRET, with file stores under $HOME); no SslCheck middleware, whose
        # verification token comes from SLACK_VERIFICATION_TOKEN (:meth:`dispatch` answers the
        # probe instead).
        self.app = AsyncApp(
            signing_secret=settings.signing_secret.get_secret_value(),
            client=AsyncWebClient(base_url=settings.api_url, session=session),
            authorize=WorkspaceAuthorize(tokens),  # type: ignore[arg-type]  # an AsyncAuthorize
            installation_store=installations,
            oauth_flow=self.oauth_flow,
            oauth_settings=oauth,
            ssl_check_enabled=False,
            # checked_request verified the signature on the raw bytes already, before bolt.
            request_verification_enabled=False,
            process_before_response=True,
            raise_error_for_unhandled_request=False,
        )
        self.app.event("app_mention")(self.accept_mention)
        self.app.event("message")(self.accept_message)
        self.app.enable_token_revocation_listeners()
        self.app.event(re.compile(".*"))(_not_answered)
        self.app.command(re.compile(".*"))(self.accept_command)

    def checked_request(
        self,
        raw: bytes,
        headers: Mapping[str, str],
        *,
        content_type: str,
        charset: str | None,
        query: str,
    ) -> AsyncBoltRequest:
        """Bolt's request for a post whose signature holds over the raw bytes (PROTOCOLS §1.1).

        Checked here before anything is decoded: bolt would decode first and fail with a 500 on
        bytes that are not UTF-8, a timestamp that is no number, or a body that is no object.
        """
        verify_slack_signature(
            self._signing_secret, raw, headers, now=self._deps.clock.now().timestamp()
        )
        if (charset or "utf-8").lower() not in {"utf-8", "utf8"}:
            raise BadRequest(f"Slack posts UTF-8, not charset {charset!r}")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadRequest(f"the body is not UTF-8: {exc.reason} at byte {exc.start}") from exc
        _check_body_shape(raw, text, content_type)
        return AsyncBoltRequest(body=text, query=query, headers=dict(headers))

    async def dispatch(self, request: AsyncBoltRequest) -> BoltResponse:
        """One request from Slack, through bolt. Slack's ``ssl_check`` probe of a slash command
        URL is answered first, unverified, as bolt's own SslCheck would (PROTOCOLS §1.4)."""
        if request.body.get("ssl_check") == "1":
            return BoltResponse(status=200, body="")
        return await self.app.async_dispatch(request)

    async def accept_mention(
        self,
        event: dict[str, Any],
        body: dict[str, Any],
        context: AsyncBoltContext,
        request: AsyncBoltRequest,
    ) -> None:
        """``app_mention``: a mention in a channel or thread (never a DM)."""
        reason = ignored_because(event, context.bot_user_id)
        if reason is not None:
            logger.debug("slack: event %s ignored: %s", body.get("event_id"), reason)
            return
        await self._accept(event, body, context, request, follow_up=False)

    async def accept_message(
        self,
        event: dict[str, Any],
        body: dict[str, Any],
        context: AsyncBoltContext,
        request: AsyncBoltRequest,
    ) -> None:
        """``message.*``: DMs, and plain follow-ups in threads a route follows. A channel
        message that mentions us is the twin of an ``app_mention``: same run (same key)."""
        reason = ignored_because(event, context.bot_user_id)
        if reason is not None:
            logger.debug("slack: event %s ignored: %s", body.get("event_id"), reason)
            return
        if event.get("channel_type") == "im" or mentions(event, context.bot_user_id):
            await self._accept(event, body, context, request, follow_up=False)
        elif event.get("thread_ts") and event.get("thread_ts") != event.get("ts"):
            await self._accept(event, body, context, request, follow_up=True)

    async def _accept(
        self,
        event: Mapping[str, Any],
        body: Mapping[str, Any],
        context: AsyncBoltContext,
        request: AsyncBoltRequest,
        *,
        follow_up: bool,
    ) -> None:
        team = team_of(body)
        channel = str(event["channel"])
        key = message_key(team, channel, str(event["ts"]))
        event_id = body.get("event_id")
        # Twins and retries first (PROTOCOLS §1.3): before any lookup, users.info or file copy.
        if self._recent.accepted(key, event_id):
            logger.debug("slack: event %s is a repeat of %s", event_id, key)
            return
        async with self._recent.one_at_a_time(key):
            if self._recent.accepted(key, event_id):
                logger.debug("slack: event %s is a repeat of %s", event_id, key)
                return
            if (request.headers.get("x-slack-retry-num") or event.get("files")) and (
                await self._stored(key)
            ):
                # A retry (or a message with files) another node or an earlier process took.
                self._recent.remember(key, event_id)
                logger.debug("slack: event %s is a repeat of %s", event_id, key)
                return
            await self._accept_new(event, body, context, team=team, follow_up=follow_up)
            self._recent.remember(key, event_id)

    async def _accept_new(
        self,
        event: Mapping[str, Any],
        body: Mapping[str, Any],
        context: AsyncBoltContext,
        *,
        team: str,
        follow_up: bool,
    ) -> None:
        channel = str(event["channel"])
        text = strip_mention(str(event.get("text") or ""), context.bot_user_id)
        chosen = choose_workflow(self._settings, channel=channel, text=text)
        if chosen is None:
            logger.info("slack: no workflow for a message in %s (set [slack] workflow)", channel)
            return
        if follow_up and not (
            chosen.route is not None
            and chosen.route.follow_threads
            and await self._in_thread(event, team, context.bot_user_id)
        ):
            return
        client = context.client
        message = message_from_event(
            event,
            bot_user_id=context.bot_user_id,
            sender_name=await self._name_of(client, event),
            attachments=await self._attachments(event, context.bot_token),
            received_at=self._deps.clock.now(),
        )
        request = event_run_request(
            message,
            chosen,
            owner_id=self._settings.owner,
            team_id=team,
            event_id=body.get("event_id"),
            enterprise_id=context.enterprise_id,
            enterprise_install=bool(context.is_enterprise_install),
        )
        submitted = await self._deps.gateway.submit(request)
        if not submitted.created:
            logger.debug(
                "slack: event %s is a repeat of run %s", body.get("event_id"), submitted.id
            )
            return
        # DEBUG, like the other intakes: the run row is the record, and a log line per event
        # was ~5% of the ack path's CPU.
        logger.debug(
            "slack: event %s in %s became run %s", body.get("event_id"), channel, submitted.id
        )

    async def _stored(self, key: str) -> bool:
        async with self._deps.database.read() as conn:
            found = await conn.execute(select(runs.c.id).where(runs.c.idempotency_key == key))
            return found.first() is not None

    async def _in_thread(
        self, event: Mapping[str, Any], team: str, bot_user_id: str | None
    ) -> bool:
        """Whether we are in this thread: we started it, or its first message made a run."""
        if bot_user_id is not None and event.get("parent_user_id") == bot_user_id:
            return True
        return await self._stored(message_key(team, str(event["channel"]), str(event["thread_ts"])))

    async def accept_command(
        self, ack: AsyncAck, command: dict[str, Any], context: AsyncBoltContext
    ) -> None:
        """A slash command: stored, then acked with a short ephemeral line (well inside 3 s)."""
        chosen = choose_workflow(
            self._settings,
            channel=str(command.get("channel_id") or ""),
            text=str(command.get("text") or "").strip(),
            command=str(command.get("command") or ""),
        )
        if chosen is None:
            await ack(f"No workflow answers {command.get('command')} here.")
            return
        message = message_from_command(
            command, sender_name=command.get("user_name"), received_at=self._deps.clock.now()
        )
        request = command_run_request(
            message,
            chosen,
            owner_id=self._settings.owner,
            team_id=team_of(command),
            enterprise_id=command.get("enterprise_id") or None,
        )
        submitted = await self._deps.gateway.submit(request)
        logger.debug("slack: %s became run %s", command.get("command"), submitted.id)
        await ack(self._settings.command_ack)

    async def _name_of(self, client: AsyncWebClient, event: Mapping[str, Any]) -> str | None:
        """The sender's display name: from the event when it has one, else ``users.info``
        (cached; a slow or refused lookup gives ``None`` rather than delaying the ack)."""
        profile = event.get("user_profile") or {}
        name = profile.get("display_name") or profile.get("real_name")
        if name:
            return str(name)
        user = str(event["user"])
        cached = self._names.get(user)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        found: str | None = None
        try:
            async with asyncio.timeout(NAME_LOOKUP_TIMEOUT):
                info = await client.users_info(user=user)
            person = info.get("user") or {}
            details = person.get("profile") or {}
            found = details.get("display_name") or person.get("real_name") or person.get("name")
        except (SlackApiError, TimeoutError, OSError) as exc:
            logger.debug("slack: no name for %s: %s", user, exc)
        self._names[user] = (time.monotonic() + NAME_CACHE_SECONDS, found or None)
        return found or None

    async def _attachments(
        self, event: Mapping[str, Any], token: str | None
    ) -> Sequence[Attachment]:
        """The message's files, copied into our file store (signed download URIs). Slack's
        ``url_private`` needs the bot token, which workflows must never see, nor any host but
        Slack's: a file whose URL points elsewhere is skipped, and redirects are not followed."""
        shared = [
            item
            for item in event.get("files") or []
            if slack_file_url(item.get("url_private_download"), self._settings.api_url)
        ]
        if not shared or token is None:
            return ()
        attachments: list[Attachment] = []
        try:
            async with asyncio.timeout(FILES_DEADLINE):
                for item in shared:
                    response = await self._deps.http.get(
                        str(item["url_private_download"]),
                        headers={"Authorization": f"Bearer {token}"},
                        follow_redirects=False,
                    )
                    if not response.is_success:
                        logger.warning(
                            "slack: file %s answered %s", item.get("id"), response.status_code
                        )
                        continue
                    content_type = str(item.get("mimetype") or "application/octet-stream")
                    filename = str(item.get("name") or item.get("id") or "file")
                    _, url = await self._deps.files.store(
                        self._settings.owner, filename, content_type, response.content
                    )
                    attachments.append(
                        Attachment(
                            filename=filename,
                            content_type=content_type,
                            size=len(response.content),
                            url=url,
                        )
                    )
        except (TimeoutError, httpx.HTTPError) as exc:
            logger.warning("slack: files not copied before the ack deadline: %r", exc)
        return attachments


def verify_slack_signature(
    secret: bytes, raw: bytes, headers: Mapping[str, str], *, now: float
) -> None:
    """Raise :class:`Unauthorized` unless ``X-Slack-Signature`` signs ``raw`` (PROTOCOLS §1.1).

    Over the bytes as they came: slack-sdk's ``SignatureVerifier`` decodes the body as UTF-8
    first and raises on one that is not, before it could tell signed from unsigned."""
    timestamp = headers.get("X-Slack-Request-Timestamp") or ""
    signature = headers.get("X-Slack-Signature") or ""
    if not (timestamp.isascii() and timestamp.isdigit()) or not signature:
        raise Unauthorized("missing or malformed X-Slack-Request-Timestamp or X-Slack-Signature")
    if abs(now - int(timestamp)) > SIGNATURE_MAX_AGE:
        raise Unauthorized("stale X-Slack-Request-Timestamp: older than five minutes")
    message = b"v0:" + timestamp.encode() + b":" + raw
    expected = "v0=" + hmac.new(secret, message, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode(), signature.encode("utf-8", "surrogateescape")):
        raise Unauthorized("invalid X-Slack-Signature: not signed with [slack] signing_secret")


def _check_body_shape(raw: bytes, text: str, content_type: str) -> None:
    """Refuse what bolt's ``parse_body`` cannot turn into an object (it would raise)."""
    if content_type == "application/json" or text.startswith("{"):
        if not isinstance(parse_json(raw), dict):
            raise BadRequest("the body must be a JSON object")
        return
    try:
        params = dict(parse_qsl(text, keep_blank_values=True, errors="strict"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadRequest(f"the form is not URL-encoded UTF-8: {exc}") from exc
    payload = params.get("payload") if "payload" in text else None
    if payload is not None and not isinstance(parse_json(payload, what="'payload'"), dict):
        raise BadRequest("'payload' must be a JSON object")


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


async def _not_answered(body: dict[str, Any]) -> None:
    """Subscribed events we do not answer: acknowledged, so Slack does not retry them."""
    event = body.get("event") or {}
    logger.debug("slack: event %s (%s) not answered", body.get("event_id"), event.get("type"))
