"""The ``slack`` channel's sender: a run's reply, posted in the thread it answers.

One delivery is several Slack calls, each a "part": the text (Markdown rendered as mrkdwn, split
into messages of ``message_limit`` characters without breaking code blocks), then one file upload
per attachment. Attachments are read from our own file store (signed download URIs), never
fetched: a URL from a workflow must not make the server fetch from its own network (SSRF); any
other URL is listed as a link under the text. ``progress`` counts the parts sent, so a retry
resumes after them. At the end the ``:eyes:`` reaction put on the user's message when a worker
started the run (:meth:`SlackSender.working`) is swapped for the done/failed one, the failed one
also when the reply itself cannot be delivered (best-effort: a reaction that cannot be changed
never holds a reply back).

Slack answers errors with HTTP 200 ``ok: false`` (PROTOCOLS §1.6): the ones no retry can fix fail
the delivery; ``ratelimited``/HTTP 429 is retried after ``Retry-After`` (§1.7); the rest retry
with the outbox's backoff. Messages to one channel are paced to about one a second.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiohttp
import httpx
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from core.errors import Forbidden, NotFound, PayloadTooLarge
from core.replies import Delivery, Reply, SendResult
from triggers.files import FileStore
from triggers.slack.hosts import is_slack_url
from triggers.slack.installations import BotTokens
from triggers.slack.render import render_mrkdwn, split_mrkdwn
from triggers.slack.settings import SlackSettings
from triggers.webhook import retry_after

logger = logging.getLogger(__name__)

FETCH_TIMEOUT = 30.0
REPLY_EVENT = "switchboard_reply"
"""``metadata.event_type`` of our posts; ``event_payload`` names the delivery and part."""
MAX_UPLOAD = 1 << 30
"""Slack's file size limit (1 GB)."""
UNREACHABLE = (aiohttp.ClientError, httpx.HTTPError, TimeoutError)
"""Transport failures: the Web API client is aiohttp (slack_sdk), ``response_url`` goes through
httpx; a retry may succeed."""
# Errors that mean "this message can never be posted here" (a retry would fail the same way).
PERMANENT_ERRORS = frozenset(
    {
        "channel_not_found",
        "not_in_channel",
        "is_archived",
        "invalid_auth",
        "not_authed",
        "account_inactive",
        "token_revoked",
        "token_expired",
        "no_permission",
        "missing_scope",
        "msg_too_long",
        "no_text",
        "invalid_blocks",
        "restricted_action",
        "cannot_reply_to_message",
        "team_access_not_granted",
        "invalid_arguments",
        "expired_url",
        "used_url",
    }
)


class Reactions:
    """The ``:eyes:`` reactions still being added, so the sender never removes a reaction
    before it was added (a fast run can finish before ``reactions.add`` returns)."""

    def __init__(self) -> None:
        self._adding: dict[str, asyncio.Task[None]] = {}

    def adding(self, key: str, call: Awaitable[None]) -> None:
        task = asyncio.ensure_future(call)
        self._adding[key] = task
        task.add_done_callback(lambda _: self._adding.pop(key, None))

    async def settled(self, key: str, timeout: float = 5.0) -> None:
        task = self._adding.get(key)
        if task is not None:
            await asyncio.wait({task}, timeout=timeout)

    async def aclose(self) -> None:
        """Let the adds in flight finish (they are short), then stop what is left."""
        pending = set(self._adding.values())
        if pending:
            _, late = await asyncio.wait(pending, timeout=5.0)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)


class _Attempt(Exception):
    """Ends an attempt early with the result it should report."""

    def __init__(self, result: SendResult) -> None:
        super().__init__(result.error)
        self.result = result


class SlackSender:
    """Implements ``core.ports.Sender`` for ``slack`` reply targets (address = channel id)."""

    def __init__(
        self,
        tokens: BotTokens,
        http: httpx.AsyncClient,
        settings: SlackSettings,
        reactions: Reactions,
        session: aiohttp.ClientSession,
        files: FileStore,
        *,
        delivery_attempts: int,
    ) -> None:
        """``delivery_attempts`` is the outbox's ``max_attempts``: a retry asked for on the
        last attempt is a failure."""
        self._delivery_attempts = delivery_attempts
        self._session = session
        self._files = files
        self._tokens = tokens
        self._http = http
        self._settings = settings
        self._reactions = reactions
        self._clients: dict[str, AsyncWebClient] = {}
        self._last_post: dict[str, float] = {}
        self._pace_locks: dict[str, asyncio.Lock] = {}

    def working(self, target: Mapping[str, Any] | None) -> None:
        """Puts the ``:eyes:`` reaction on the message a run answers, when a worker starts it.

        Not at intake: one Web API call per event there cost as much CPU as the rest of the
        ack path, and "working" is what the reaction says. Started in the background, owned by
        :class:`Reactions` (drained at shutdown); :meth:`send` waits for it before the swap."""
        reaction = self._settings.working_reaction
        if reaction is None or not target or target.get("channel") != "slack":
            return
        details: Mapping[str, Any] = target.get("details") or {}
        message_ts = details.get("message_ts")
        if not message_ts:
            return  # a slash command: no message of the user's to react to
        channel = str(target.get("address") or "")
        self._reactions.adding(
            f"{channel}:{message_ts}",
            self._add_working(channel, str(message_ts), details, reaction),
        )

    async def _add_working(
        self, channel: str, message_ts: str, details: Mapping[str, Any], reaction: str
    ) -> None:
        try:
            workspace = await self._tokens.for_workspace(
                details.get("enterprise_id"),
                details.get("team_id"),
                enterprise_install=bool(details.get("enterprise_install")),
            )
            if workspace is None or workspace.bot_token is None:
                return
            await self._client(workspace.bot_token).reactions_add(
                channel=channel, timestamp=message_ts, name=reaction
            )
        except (SlackApiError, *UNREACHABLE) as exc:
            logger.info("slack: no %s reaction on %s/%s: %r", reaction, channel, message_ts, exc)

    async def send(self, delivery: Delivery) -> SendResult:
        target = delivery.target
        details: dict[str, Any] = target.get("details") or {}
        channel = str(target.get("address") or "")
        reply = delivery.reply
        try:
            if details.get("response_url"):
                return await self._respond(delivery, str(details["response_url"]), details)
            workspace = await self._tokens.for_workspace(
                details.get("enterprise_id"),
                details.get("team_id"),
                enterprise_install=bool(details.get("enterprise_install")),
            )
            if workspace is None or workspace.bot_token is None:
                return SendResult.failed(
                    f"no bot token for Slack workspace {details.get('team_id')!r}"
                )
            client = self._client(workspace.bot_token)
            parts = self._parts(reply, delivery.id)
            done = delivery.progress
            posted = (
                await self._posted_before(client, channel, target.get("thread_id"), delivery)
                if delivery.in_doubt and done < len(parts)
                else set()
            )
            for index, part in enumerate(parts):
                if index < done or index in posted:
                    continue
                await self._pace(channel)
                stopped = await _post(part, client, channel, target.get("thread_id"), index)
                if stopped is not None:
                    last = delivery.attempts >= self._delivery_attempts
                    if stopped.outcome == "failed" or last:
                        # No retry will bring the reply (a permanent error, or the outbox gives
                        # up now): the user's message should not keep saying "working".
                        await self._swap_reaction(client, channel, details, failed=True)
                    return stopped
            await self._swap_reaction(client, channel, details, failed=bool(reply and reply.failed))
            return SendResult.sent(progress=len(parts))
        except UNREACHABLE as exc:
            return _unreachable(exc, progress=delivery.progress)
        except SlackApiError as exc:  # auth.test refused the single-workspace token
            return _result_of(exc, progress=delivery.progress)

    def _client(self, token: str) -> AsyncWebClient:
        client = self._clients.get(token)
        if client is None:
            client = AsyncWebClient(
                token=token, base_url=self._settings.api_url, session=self._session
            )
            self._clients[token] = client
        return client

    async def _posted_before(
        self, client: AsyncWebClient, channel: str, thread: str | None, delivery: Delivery
    ) -> set[int]:
        """The parts of ``delivery`` already in the channel (or thread), by the metadata each
        post carries: an attempt that died between Slack's answer and our record must not
        post them twice (chat.postMessage has no idempotency key). A history we cannot read
        (no ``*:history`` scope, Slack unreachable) says nothing: the parts are sent again."""
        try:
            if thread:
                answer = await client.conversations_replies(
                    channel=channel, ts=thread, include_all_metadata=True, limit=200
                )
            else:
                answer = await client.conversations_history(
                    channel=channel, include_all_metadata=True, limit=100
                )
        except (SlackApiError, *UNREACHABLE) as exc:
            logger.warning(
                "delivery %s (run %s): could not look for parts already posted: %r",
                delivery.id,
                delivery.run_id,
                exc,
            )
            return set()
        posted: set[int] = set()
        for message in answer.get("messages") or []:
            metadata = message.get("metadata") or {}
            payload = metadata.get("event_payload") or {}
            if metadata.get("event_type") == REPLY_EVENT and payload.get("delivery") == delivery.id:
                posted.add(int(payload.get("part", -1)))
        if posted:
            logger.info(
                "delivery %s (run %s): parts %s were posted by an interrupted attempt",
                delivery.id,
                delivery.run_id,
                sorted(posted),
            )
        return posted

    def _parts(
        self, reply: Reply | None, delivery_id: int
    ) -> list[Callable[[AsyncWebClient, str, str | None], Awaitable[None]]]:
        if reply is None:
            return []
        parts: list[Callable[[AsyncWebClient, str, str | None], Awaitable[None]]] = []
        ours = [url for url in reply.attachments if self._is_ours(url)]
        links = [url for url in reply.attachments if url not in ours]
        text = with_links(reply.text, links)
        text = render_mrkdwn(text) if text.strip() else ""
        chunks = split_mrkdwn(text, self._settings.message_limit) if text else []
        for index, chunk in enumerate(chunks):
            # Which delivery and part this post is: how a retry after a crash finds it.
            metadata = {
                "event_type": REPLY_EVENT,
                "event_payload": {"delivery": delivery_id, "part": index},
            }

            async def post(
                client: AsyncWebClient,
                channel: str,
                thread: str | None,
                chunk: str = chunk,
                metadata: dict[str, Any] = metadata,
            ) -> None:
                await client.chat_postMessage(
                    channel=channel, text=chunk, thread_ts=thread, metadata=metadata
                )

            parts.append(post)
        for url in ours:

            async def upload(
                client: AsyncWebClient, channel: str, thread: str | None, url: str = url
            ) -> None:
                content, filename = await self._read(url)
                await client.files_upload_v2(
                    channel=channel, thread_ts=thread, content=content, filename=filename
                )

            parts.append(upload)
        return parts

    def _is_ours(self, url: str) -> bool:
        """Whether ``url`` is a signed download URI of our file store (expired ones too: a
        retry must not turn a file into a link)."""
        try:
            self._files.file_id_of(url, allow_expired=True)
        except Forbidden:
            return False
        return True

    async def _read(self, url: str) -> tuple[bytes, str]:
        """An attachment's bytes, from our file store (never over HTTP)."""
        try:
            stored = await self._files.read_signed(url, max_size=MAX_UPLOAD, allow_expired=True)
        except NotFound as exc:
            raise _Attempt(SendResult.failed(f"attachment {exc.name} is no longer stored")) from exc
        except (Forbidden, PayloadTooLarge) as exc:
            raise _Attempt(SendResult.failed(f"attachment not sent: {exc.detail}")) from exc
        return stored.data, stored.filename

    async def _respond(self, delivery: Delivery, url: str, details: dict[str, Any]) -> SendResult:
        """A slash command's result: POSTed to its ``response_url`` (no token needed), which
        must be Slack's (https) or ``[slack] api_url``'s host: the payload names it."""
        reply = delivery.reply
        if reply is None:
            return SendResult.sent()
        if not is_slack_url(url, self._settings.api_url):
            return SendResult.failed("response_url is not a Slack URL; the result was not sent")
        lines = [reply.text, *reply.attachments]
        text = render_mrkdwn("\n\n".join(line for line in lines if line.strip()))
        parts = split_mrkdwn(text, self._settings.message_limit) if text else []
        for index, chunk in enumerate(parts):
            if index < delivery.progress:
                continue
            body = {
                "text": chunk,
                "response_type": details.get("response_type", "ephemeral"),
                "replace_original": False,
            }
            try:
                response = await self._http.post(url, json=body, timeout=FETCH_TIMEOUT)
            except httpx.HTTPError as exc:
                return _unreachable(exc, progress=index)
            if response.status_code == 429 or response.status_code >= 500:
                return SendResult.retry(
                    f"response_url answered {response.status_code}",
                    after=retry_after(response.headers.get("Retry-After")),
                    progress=index,
                )
            if not response.is_success:
                return SendResult.failed(
                    f"response_url answered {response.status_code}: {response.text[:200]}",
                    progress=index,
                )
        return SendResult.sent(progress=len(parts))

    async def _pace(self, channel: str) -> None:
        """About one message per second per channel (chat.postMessage's special limit)."""
        interval = self._settings.channel_interval
        if interval <= 0:
            return
        lock = self._pace_locks.setdefault(channel, asyncio.Lock())
        async with lock:
            wait = self._last_post.get(channel, 0.0) + interval - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            self._last_post[channel] = time.monotonic()

    async def _swap_reaction(
        self, client: AsyncWebClient, channel: str, details: dict[str, Any], *, failed: bool
    ) -> None:
        message_ts = details.get("message_ts")
        settings = self._settings
        if not message_ts or settings.working_reaction is None:
            return
        await self._reactions.settled(f"{channel}:{message_ts}")
        final = settings.failed_reaction if failed else settings.done_reaction
        try:
            if final is not None:
                await client.reactions_add(channel=channel, timestamp=message_ts, name=final)
            await client.reactions_remove(
                channel=channel, timestamp=message_ts, name=settings.working_reaction
            )
        except SlackApiError as exc:
            logger.info(
                "slack: reaction on %s/%s not changed: %s",
                channel,
                message_ts,
                exc.response.get("error"),
            )
        except UNREACHABLE as exc:  # the reply is out: never worth a retry that re-posts it
            logger.info("slack: reaction on %s/%s not changed: %r", channel, message_ts, exc)


async def _post(
    part: Callable[[AsyncWebClient, str, str | None], Awaitable[None]],
    client: AsyncWebClient,
    channel: str,
    thread: str | None,
    index: int,
) -> SendResult | None:
    """Sends one part; ``None`` when it went out, else the attempt's result (``progress`` =
    ``index``: the parts before this one are in the thread, the retry starts here)."""
    try:
        await part(client, channel, thread)
    except _Attempt as stop:
        return stop.result.model_copy(update={"progress": index})
    except SlackApiError as exc:
        return _result_of(exc, progress=index)
    except UNREACHABLE as exc:
        return _unreachable(exc, progress=index)
    return None


def with_links(text: str, links: list[str]) -> str:
    """The reply text with the attachments that are not our files listed as links under it."""
    if not links:
        return text
    listed = "Attachments (links):\n" + "\n".join(f"- <{url}>" for url in links)
    return f"{text.rstrip()}\n\n{listed}" if text.strip() else listed


def _unreachable(exc: BaseException, *, progress: int) -> SendResult:
    return SendResult.retry(f"slack unreachable: {type(exc).__name__}", progress=progress)


def _result_of(exc: SlackApiError, *, progress: int) -> SendResult:
    response = exc.response
    error = str(response.get("error") or f"HTTP {response.status_code}")
    if response.status_code == 429 or error == "ratelimited":
        after = retry_after(
            str(response.headers.get("Retry-After") or response.headers.get("retry-after") or "")
        )
        return SendResult.retry(
            f"slack: {error}", after=after if after is not None else 1.0, progress=progress
        )
    if error in PERMANENT_ERRORS:
        return SendResult.failed(f"slack: {error}", progress=progress)
    return SendResult.retry(f"slack: {error}", progress=progress)
