"""Processing of the ``slack`` trigger's inbox events: the stored request through bolt.

The edge verified the signature and stored the request (headers it needs, the raw body); here
bolt gets it again with verification off, and its listeners *return* what the event makes
instead of submitting it: run requests, or :class:`core.inbox.Ignored` with the reason (a bot's
message, an edit, a channel message not for us). The heavy work lives here, off the ack path:
routes, bot-loop and self guards, the sender's name (``users.info``, cached), file copies.

Exactly once (PROTOCOLS §1.3): retries of one delivery never get here twice (the inbox dedupes
by ``event_id``); the ``app_mention`` and ``message`` twins of one message do, one after the
other (same ordering key), and make one run by the run's idempotency key
``slack:<team>:<channel>:<ts>``. A twin whose run is already stored is ignored before any
``users.info`` or file copy. Processing is safe to repeat after a crash: the same key again.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import httpx
from slack_bolt.async_app import AsyncApp
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from core.clock import Clock
from core.db import Database
from core.inbox import Ignored, ProcessingResult, StoredEvent
from core.messages import Attachment
from core.ports import RunHistory
from triggers.files import FileStore
from triggers.slack.hosts import slack_file_url
from triggers.slack.installations import (
    BotTokens,
    SlackInstallations,
    SlackOAuthStates,
    WorkspaceAuthorize,
    explicit_oauth_settings,
)
from triggers.slack.payloads import (
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
from triggers.slack.settings import SlackSettings

logger = logging.getLogger(__name__)

NAME_LOOKUP_TIMEOUT = 2.0
NAME_CACHE_SECONDS = 3600.0
FILES_DEADLINE = 30.0
"""Seconds for one event's file copies (off the ack path now: Slack's 3 s no longer bind)."""
_RESULT = "switchboard_result"
"""Where a listener leaves its :data:`ProcessingResult` in bolt's context."""
_REVOCATIONS = frozenset({"tokens_revoked", "app_uninstalled"})


@dataclass(frozen=True, slots=True)
class ProcessDeps:
    database: Database
    history: RunHistory
    """whether a message's run is stored (its twin's, or a thread's first message's)"""
    files: FileStore
    clock: Clock
    http: httpx.AsyncClient
    installations: SlackInstallations
    oauth_states: SlackOAuthStates
    tokens: BotTokens
    session: aiohttp.ClientSession
    redirect_uri: str


class SlackProcessor:
    """The ``slack`` trigger's :class:`core.inbox.EventProcessor`."""

    def __init__(self, settings: SlackSettings, deps: ProcessDeps) -> None:
        self._settings = settings
        self._deps = deps
        self._names: dict[str, tuple[float, str | None]] = {}
        oauth = explicit_oauth_settings(
            settings, deps.installations, deps.oauth_states, deps.redirect_uri
        )
        # Every value bolt 1.x would take from the environment is given (STYLE 4): the signing
        # secret; a client without a token (each request gets its workspace's token from
        # authorize, so SLACK_BOT_TOKEN is never used nor auth.test called on bolt's own); an
        # OAuth settings object always (without one bolt builds an install flow from
        # SLACK_CLIENT_ID/SECRET, with file stores under $HOME); no SslCheck middleware, whose
        # verification token comes from SLACK_VERIFICATION_TOKEN (the edge answers the probe).
        self.app = AsyncApp(
            # "" and not None: None would make bolt read SLACK_SIGNING_SECRET. Socket Mode has
            # no signatures (the app token authenticates the connection, PROTOCOLS §1b).
            signing_secret=(
                settings.signing_secret.get_secret_value() if settings.signing_secret else ""
            ),
            client=AsyncWebClient(base_url=settings.api_url, session=deps.session),
            authorize=WorkspaceAuthorize(deps.tokens),  # type: ignore[arg-type]  # AsyncAuthorize
            installation_store=deps.installations,
            oauth_settings=oauth,
            ssl_check_enabled=False,
            # The edge verified the signature on the raw bytes before storing (PROTOCOLS §1.1);
            # a stored event may be processed long after the five-minute window.
            request_verification_enabled=False,
            process_before_response=True,
            raise_error_for_unhandled_request=False,
        )
        self.app.event("app_mention")(self._mention)
        self.app.event("message")(self._message)
        self.app.enable_token_revocation_listeners()
        self.app.event(re.compile(".*"))(_not_answered)
        self.app.command(re.compile(".*"))(self._command)

    async def process(self, event: StoredEvent) -> ProcessingResult:
        holder: list[ProcessingResult] = []
        request = AsyncBoltRequest(
            body=event.body.decode("utf-8"),
            headers=dict(event.headers),
            context={_RESULT: holder, "switchboard_event": event},
        )
        response = await self.app.async_dispatch(request)
        if holder:
            return holder[0]
        if response.status >= 500:
            # authorize could not ask auth.test (timeout, connection): retried by the inbox.
            raise RuntimeError(f"bolt answered {response.status}: {response.body[:200]}")
        kind = _kind_of(request.body)
        if kind in _REVOCATIONS and response.status < 300:
            return []  # bolt's revocation listener deleted the installation: processed, no run
        if response.status >= 400:
            return Ignored(f"not authorized for this workspace ({response.status})")
        return Ignored(f"not answered: {kind or 'unknown'}")

    async def _mention(
        self, event: dict[str, Any], body: dict[str, Any], context: AsyncBoltContext
    ) -> None:
        """``app_mention``: a mention in a channel or thread (never a DM)."""
        reason = ignored_because(event, context.bot_user_id)
        result = Ignored(reason) if reason else await self._answer(event, body, context, False)
        _give(context, result)

    async def _message(
        self, event: dict[str, Any], body: dict[str, Any], context: AsyncBoltContext
    ) -> None:
        """``message.*``: DMs, and plain follow-ups in threads a route follows. A channel
        message that mentions us is the twin of an ``app_mention``: same run (same key)."""
        reason = ignored_because(event, context.bot_user_id)
        result: ProcessingResult
        if reason is not None:
            result = Ignored(reason)
        elif event.get("channel_type") == "im" or mentions(event, context.bot_user_id):
            result = await self._answer(event, body, context, False)
        elif event.get("thread_ts") and event.get("thread_ts") != event.get("ts"):
            result = await self._answer(event, body, context, True)
        else:
            result = Ignored("a channel message not for us")
        _give(context, result)

    async def _answer(
        self,
        event: Mapping[str, Any],
        body: Mapping[str, Any],
        context: AsyncBoltContext,
        follow_up: bool,
    ) -> ProcessingResult:
        stored: StoredEvent = context["switchboard_event"]
        team = team_of(body)
        channel = str(event["channel"])
        key = message_key(team, channel, str(event["ts"]))
        if stored.replay_of is None and await self._stored(key):
            # The twin (or an earlier attempt) made the run: no users.info, no file copy.
            return Ignored(f"a repeat of message {key}")
        text = strip_mention(str(event.get("text") or ""), context.bot_user_id)
        chosen = choose_workflow(self._settings, channel=channel, text=text)
        if chosen is None:
            return Ignored(f"no workflow for a message in {channel} (set [slack] workflow)")
        if follow_up and not (
            chosen.route is not None
            and chosen.route.follow_threads
            and await self._in_thread(event, team, context.bot_user_id)
        ):
            return Ignored("a thread reply in a thread we do not follow")
        message = message_from_event(
            event,
            bot_user_id=context.bot_user_id,
            sender_name=await self._name_of(context.client, event),
            attachments=await self._attachments(event, context.bot_token),
            received_at=stored.received_at,
        )
        return [
            event_run_request(
                message,
                chosen,
                owner_id=self._settings.owner,
                team_id=team,
                event_id=body.get("event_id"),
                enterprise_id=context.enterprise_id,
                enterprise_install=bool(context.is_enterprise_install),
            )
        ]

    async def _command(
        self, ack: AsyncAck, command: dict[str, Any], context: AsyncBoltContext
    ) -> None:
        """A slash command (the edge answered ``command_ack`` already): its run."""
        await ack()  # bolt waits for an ack; the HTTP answer went out at the edge
        stored: StoredEvent = context["switchboard_event"]
        chosen = choose_workflow(
            self._settings,
            channel=str(command.get("channel_id") or ""),
            text=str(command.get("text") or "").strip(),
            command=str(command.get("command") or ""),
        )
        if chosen is None:
            _give(context, Ignored(f"no workflow answers {command.get('command')}"))
            return
        message = message_from_command(
            command, sender_name=command.get("user_name"), received_at=stored.received_at
        )
        request = command_run_request(
            message,
            chosen,
            owner_id=self._settings.owner,
            team_id=team_of(command),
            enterprise_id=command.get("enterprise_id") or None,
        )
        _give(context, [request])

    async def _stored(self, key: str) -> bool:
        found = await self._deps.history.runs_by_key_prefix(self._settings.owner, key, 20)
        return any(run.idempotency_key == key for run in found)

    async def _in_thread(
        self, event: Mapping[str, Any], team: str, bot_user_id: str | None
    ) -> bool:
        """Whether we are in this thread: we started it, or its first message made a run (that
        message shares the ordering key, so it was processed before this one)."""
        if bot_user_id is not None and event.get("parent_user_id") == bot_user_id:
            return True
        return await self._stored(message_key(team, str(event["channel"]), str(event["thread_ts"])))

    async def _name_of(self, client: AsyncWebClient, event: Mapping[str, Any]) -> str | None:
        """The sender's display name: from the event when it has one, else ``users.info``
        (cached; a refused or slow lookup gives ``None``: a name is not worth a retry)."""
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
        except (SlackApiError, TimeoutError, OSError, aiohttp.ClientError) as exc:
            logger.debug("slack: no name for %s: %s", user, exc)
        self._names[user] = (time.monotonic() + NAME_CACHE_SECONDS, found or None)
        return found or None

    async def _attachments(
        self, event: Mapping[str, Any], token: str | None
    ) -> Sequence[Attachment]:
        """The message's files, copied into our file store (signed download URIs). Slack's
        ``url_private`` needs the bot token, which workflows must never see, nor any host but
        Slack's: a file whose URL points elsewhere is skipped, and redirects are not followed.
        A copy that fails raises: the inbox retries the event rather than lose the file."""
        shared = [
            item
            for item in event.get("files") or []
            if slack_file_url(item.get("url_private_download"), self._settings.api_url)
        ]
        if not shared or token is None:
            return ()
        attachments: list[Attachment] = []
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
        return attachments


def _give(context: AsyncBoltContext, result: ProcessingResult) -> None:
    holder: list[ProcessingResult] = context[_RESULT]
    holder.append(result)


def _kind_of(body: Mapping[str, Any]) -> str | None:
    event = body.get("event")
    if isinstance(event, Mapping):
        return str(event.get("type") or "") or None
    return str(body.get("type") or "") or None


async def _not_answered(body: dict[str, Any], context: AsyncBoltContext) -> None:
    """Subscribed events we do not answer: processed, no run."""
    event = body.get("event") or {}
    _give(context, Ignored(f"not answered: {event.get('type')}"))
