"""The Socket Mode edge of the Slack channel: trigger ``slack:socket`` (PROTOCOLS §1b).

Slack pushes what it would POST to ``/slack/events`` and ``/slack/commands`` through a WebSocket
this node opens, so no public URL is needed. Each envelope is stored as the HTTP edge stores it
(same dedupe and ordering keys: a redelivery with ``retry_attempt``, or the same event taken by
another node's socket, is stored once) and acknowledged on the socket only after
:meth:`core.inbox.Inbox.accept` returns; a slash command's ack carries ``command_ack``. The
processing is the ``slack`` trigger's (bolt fed from the stored payload).

The connection is ours on aiohttp, with slack-sdk for ``apps.connections.open`` and the envelope
types: slack-sdk's ``SocketModeClient`` retries a spent single-use URL at a fixed interval when a
connect fails, closes the live connection before opening the next on ``refresh_requested``,
runs listeners in tasks nothing drains on close, and reads proxies from the environment.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from slack_sdk.web.async_client import AsyncWebClient

from core.clock import Clock
from core.inbox import ArrivingEvent, Inbox
from triggers.slack.edge import command_answer, dedupe_key, ordering_key
from triggers.slack.settings import SlackSettings

logger = logging.getLogger(__name__)

SOCKET_TRIGGER = "slack:socket"
HELLO_TIMEOUT = 10.0
"""Seconds from the WebSocket handshake to Slack's ``hello``."""
RETIRE_TIMEOUT = 10.0
"""Seconds a replaced connection keeps reading and acking before we close it."""
BACKOFF_FIRST = 0.5
_STORED_HEADERS = {"content-type": "application/json"}
"""Bolt parses the stored payload as JSON (over HTTP it is what the request said)."""
_CONNECT_ERRORS = (SlackApiError, aiohttp.ClientError, OSError, TimeoutError, ValueError)


@dataclass(frozen=True, slots=True)
class SocketDeps:
    inbox: Inbox
    clock: Clock
    session: aiohttp.ClientSession


def arriving_event(
    settings: SlackSettings, request: SocketModeRequest
) -> tuple[ArrivingEvent | None, dict[str, Any] | None]:
    """What an envelope stores (``None``: nothing) and its ack's ``payload``."""
    payload = request.payload
    if not isinstance(payload, dict):
        raise ValueError(f"envelope {request.envelope_id}: the payload is not a JSON object")
    ack: dict[str, Any] | None = None
    keyed: Mapping[str, Any] = payload
    if request.type == "slash_commands":
        store, text = command_answer(settings, payload)
        ack = {"text": text} if request.accepts_response_payload else None
        if not store:
            return None, ack
    elif request.type == "interactive":
        keyed = {"payload": payload}  # the edge's keys read an interaction under "payload"
    elif request.type != "events_api":
        return None, None
    event = ArrivingEvent(
        trigger=SOCKET_TRIGGER,
        ordering_key=ordering_key(keyed),
        body=json.dumps(payload, separators=(",", ":")).encode(),
        dedupe_key=dedupe_key(keyed),
        headers=_STORED_HEADERS,
    )
    return event, ack


class _Link:
    """One WebSocket connection: reads frames, stores and acks each envelope in its own task."""

    def __init__(self, socket: SlackSocket, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._socket = socket
        self.ws = ws
        self.opened = time.monotonic()
        self.replace = asyncio.Event()
        """Slack sent ``disconnect``: open the next connection; this one still reads."""
        self.delivered = False
        self._takes: set[asyncio.Task[None]] = set()
        self.reader = asyncio.create_task(self._read(), name="slack-socket-read")

    async def _read(self) -> None:
        async for frame in self.ws:
            if frame.type is aiohttp.WSMsgType.ERROR:  # no pong in time (heartbeat), a reset
                self._socket.failed(f"connection lost: {frame.data!r}")
                break
            if frame.type is not aiohttp.WSMsgType.TEXT:
                continue
            try:
                message = json.loads(frame.data)
            except ValueError:
                logger.warning("slack socket: a frame that is not JSON, skipped")
                continue
            request = SocketModeRequest.from_dict(message) if isinstance(message, dict) else None
            if request is not None:
                task = asyncio.create_task(self._take(request), name="slack-socket-take")
                self._takes.add(task)
                task.add_done_callback(self._takes.discard)
            elif message.get("type") == "disconnect":
                reason = str(message.get("reason") or "")
                logger.info("slack socket: disconnect (%s), opening the next connection", reason)
                if reason == "link_disabled":
                    self._socket.failed("Socket Mode is turned off for the app (link_disabled)")
                self.replace.set()

    async def _take(self, request: SocketModeRequest) -> None:
        """Commit, then ack (PROTOCOLS §1b); no ack on a failure: Slack redelivers."""
        try:
            event, payload = arriving_event(self._socket.settings, request)
            if event is not None:
                await self._socket.inbox.accept(event)
            ack = SocketModeResponse(envelope_id=request.envelope_id, payload=payload)
            await self.ws.send_str(json.dumps(ack.to_dict()))
        except Exception as exc:  # any failure: nothing acked, the envelope comes again
            logger.warning("slack socket: envelope %s not taken: %s", request.envelope_id, exc)
            self._socket.failed(f"envelope {request.envelope_id} not taken: {exc}")
            return
        self.delivered = True
        self._socket.took()

    async def close(self, timeout: float) -> None:
        """Let the envelopes in hand commit and ack, then close."""
        if self._takes:
            await asyncio.wait(set(self._takes), timeout=timeout)
        await self.ws.close()
        for task in (*self._takes, self.reader):
            task.cancel()
        await asyncio.gather(self.reader, *self._takes, return_exceptions=True)


class SlackSocket:
    """This node's Socket Mode connection, reconnected with backoff; its health for the trigger.

    Slack delivers each event to one of an app's connections (up to 10), so every web node may
    hold one: the inbox's dedupe key keeps one run per message whichever node takes it.
    """

    def __init__(self, settings: SlackSettings, deps: SocketDeps) -> None:
        if settings.app_token is None:
            raise ValueError("Socket Mode needs [slack] app_token")
        self.settings = settings
        self.inbox = deps.inbox
        self._clock = deps.clock
        self._session = deps.session
        self._token = settings.app_token.get_secret_value()
        self._web = AsyncWebClient(base_url=settings.api_url, session=deps.session)
        self._runner: asyncio.Task[None] | None = None
        self._links: set[_Link] = set()
        self._retiring: set[asyncio.Task[None]] = set()
        self.connected_since: datetime | None = None
        self.connections: int | None = None
        self.last_event_at: datetime | None = None
        self.last_error: str | None = None
        self.last_error_at: datetime | None = None
        self.reconnects = 0

    async def start(self, stack: AsyncExitStack) -> None:
        self._runner = asyncio.create_task(self._run(), name="slack-socket")
        stack.push_async_callback(self._stop)

    async def _stop(self) -> None:
        if self._runner is not None:
            self._runner.cancel()
            await asyncio.gather(self._runner, return_exceptions=True)
        for link in list(self._links):
            await link.close(RETIRE_TIMEOUT)
        await asyncio.gather(*self._retiring, return_exceptions=True)

    def took(self) -> None:
        self.last_event_at = self._clock.now()

    def failed(self, error: str) -> None:
        self.last_error, self.last_error_at = error, self._clock.now()

    def details(self) -> dict[str, object]:
        """``slack:socket``'s part of ``GET /api/v1/triggers``."""
        return {
            "connected": self.connected_since is not None,
            "connected_since": _iso(self.connected_since),
            "connections": self.connections,
            "last_event_at": _iso(self.last_event_at),
            "last_error": self.last_error,
            "last_error_at": _iso(self.last_error_at),
            "reconnects": self.reconnects,
        }

    async def _run(self) -> None:
        failures = 0
        current: _Link | None = None
        while True:
            try:
                link = await self._connect()
            except _CONNECT_ERRORS as exc:
                failures += 1
                self.failed(f"connect failed: {exc}")
                logger.warning("slack socket: connect failed (%s attempts): %s", failures, exc)
                await asyncio.sleep(_backoff(failures, self.settings.socket_backoff_max))
                continue
            if current is not None:  # replaced on refresh: the old one finishes its acks
                self._retire(current)
            current = link
            ended = asyncio.create_task(link.replace.wait())
            try:
                await asyncio.wait({link.reader, ended}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                ended.cancel()
            self.reconnects += 1
            if link.reader.done():  # closed under us: a dropped TCP connection, a missed pong
                self.connected_since = None
                self._retire(link)
                current = None
                lasted = time.monotonic() - link.opened >= self.settings.socket_ping_interval
                failures = 0 if lasted or link.delivered else failures + 1
                await asyncio.sleep(_backoff(failures, self.settings.socket_backoff_max))

    async def _connect(self) -> _Link:
        """A fresh URL for every connection (each is a single-use ticket), then ``hello``."""
        opened = await self._web.apps_connections_open(app_token=self._token)
        url = str(opened["url"])
        try:
            async with asyncio.timeout(HELLO_TIMEOUT):
                ws = await self._session.ws_connect(
                    url, heartbeat=self.settings.socket_ping_interval
                )
        except aiohttp.ClientResponseError as exc:  # its text names the URL: a ticket, not logged
            raise ConnectionError(f"the WebSocket handshake answered {exc.status}") from None
        try:
            async with asyncio.timeout(HELLO_TIMEOUT):
                hello = await ws.receive_json()
            if not isinstance(hello, dict) or hello.get("type") != "hello":
                raise ValueError(f"expected hello first, got {str(hello)[:100]}")
        except BaseException:
            await ws.close()
            raise
        self.connected_since = self._clock.now()
        self.connections = hello.get("num_connections")
        link = _Link(self, ws)
        self._links.add(link)
        logger.info("slack socket: connected (%s connections of the app)", self.connections)
        return link

    def _retire(self, link: _Link) -> None:
        async def retire() -> None:
            await link.close(RETIRE_TIMEOUT)
            self._links.discard(link)

        task = asyncio.create_task(retire(), name="slack-socket-retire")
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)


def _backoff(failures: int, longest: float) -> float:
    """0 for a healthy connection's first reconnect, then doubling with jitter up to ``longest``."""
    if failures == 0:
        return 0.0
    delay: float = min(longest, BACKOFF_FIRST * 2.0 ** (failures - 1))
    return delay * (0.5 + random.random() / 2)  # noqa: S311  # jitter, not a secret


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None
