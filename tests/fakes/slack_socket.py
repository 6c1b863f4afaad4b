"""A fake Slack Socket Mode end on 127.0.0.1 (PROTOCOLS §1b), served by the fake Web API.

``apps.connections.open`` (tests/fakes/slack_api.py) hands out a single-use ``ws://`` URL of
:meth:`SocketMode.link`; each connection gets ``hello``, then what the test sends: envelopes
(:meth:`SocketMode.send`), redeliveries with ``retry_attempt`` (:meth:`SocketMode.redeliver`),
``disconnect`` frames, or a dropped TCP connection. Every ack is recorded by envelope id;
:meth:`SocketMode.lose_acks` makes acks vanish as if the node had died before sending them.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

APP_ID = "A111"


@dataclass(eq=False)
class Link:
    """One client connection."""

    number: int
    ws: web.WebSocketResponse
    request: web.Request
    received: list[str] = field(default_factory=list)
    """Envelope ids sent over this connection."""


@dataclass
class SocketMode:
    ws_url: str = ""
    links: list[Link] = field(default_factory=list)
    """Open connections, oldest first."""
    opened: int = 0
    sent: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Envelopes by id, as sent."""
    acks: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Acks by envelope id, as received."""
    acked_at: dict[str, float] = field(default_factory=dict)
    """When each ack arrived (``time.monotonic``), for the benchmark's latencies."""
    refuse: str | None = None
    """``apps.connections.open`` fails with this error (Socket Mode turned off, a bad token)."""
    answer_pings: bool = True
    """``False``: new connections never pong (a half-dead connection the client must notice)."""
    _tickets: set[str] = field(default_factory=set)
    _lost: bool = False
    _numbers: itertools.count[int] = field(default_factory=itertools.count)
    _turn: int = 0
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    def ticket(self, token: str | None) -> dict[str, Any]:
        """``apps.connections.open``: the app-level token gets a fresh single-use URL."""
        if not (token or "").startswith("xapp-"):
            return {"ok": False, "error": "not_allowed_token_type"}
        if self.refuse is not None:
            return {"ok": False, "error": self.refuse}
        ticket = uuid.uuid4().hex
        self._tickets.add(ticket)
        return {"ok": True, "url": f"{self.ws_url}?ticket={ticket}"}

    def lose_acks(self, lost: bool = True) -> None:
        """Acks from now on are dropped unrecorded (the node died before it could ack)."""
        self._lost = lost

    def unacked(self) -> list[str]:
        return [envelope for envelope in self.sent if envelope not in self.acks]

    async def link(self, request: web.Request) -> web.WebSocketResponse:
        ticket = request.query.get("ticket", "")
        if ticket not in self._tickets:
            raise web.HTTPForbidden(text="unknown or used ticket")
        self._tickets.discard(ticket)
        ws = web.WebSocketResponse(autoping=self.answer_pings)
        await ws.prepare(request)
        link = Link(next(self._numbers), ws, request)
        await self._change(lambda: self.links.append(link))
        self.opened += 1
        await ws.send_json(
            {
                "type": "hello",
                "num_connections": len(self.links),
                "debug_info": {"host": "fake", "approximate_connection_time": 18060},
                "connection_info": {"app_id": APP_ID},
            }
        )
        try:
            async for frame in ws:
                if frame.type is not WSMsgType.TEXT:
                    continue  # a ping left unanswered (autoping off)
                message = json.loads(frame.data)
                if "envelope_id" in message and not self._lost:
                    await self._ack(message)
        finally:
            await self._change(lambda: self.links.remove(link))
        return ws

    async def send(
        self,
        kind: str,
        payload: dict[str, Any],
        *,
        link: Link | None = None,
        retry_attempt: int = 0,
        retry_reason: str = "",
    ) -> str:
        """One envelope to ``link`` (default: the open connections in turn, as Slack spreads
        events over them); returns its id."""
        if link is None:
            if not self.links:
                raise RuntimeError("no Socket Mode connection is open")
            link = self.links[self._turn % len(self.links)]
            self._turn += 1
        envelope_id = str(uuid.uuid4())
        frame = {
            "envelope_id": envelope_id,
            "type": kind,
            "payload": payload,
            "accepts_response_payload": kind != "events_api",
            "retry_attempt": retry_attempt,
            "retry_reason": retry_reason,
        }
        self.sent[envelope_id] = frame
        link.received.append(envelope_id)
        await link.ws.send_json(frame)
        return envelope_id

    async def redeliver(self, envelope_id: str, *, link: Link | None = None) -> str:
        """Slack's redelivery of an un-acked envelope: a new envelope, ``retry_attempt`` + 1."""
        first = self.sent[envelope_id]
        return await self.send(
            first["type"],
            first["payload"],
            link=link,
            retry_attempt=first["retry_attempt"] + 1,
            retry_reason="timeout",
        )

    async def disconnect(self, link: Link, reason: str = "refresh_requested") -> None:
        await link.ws.send_json({"type": "disconnect", "reason": reason})

    def drop(self, link: Link) -> None:
        """Cut the TCP connection without a WebSocket close (a NAT timeout, a dead peer)."""
        assert link.request.transport is not None
        link.request.transport.abort()

    async def close(self) -> None:
        """Close every connection (the server's shutdown would wait for their handlers)."""
        for link in list(self.links):
            await link.ws.close()

    async def wait_for(self, condition: Callable[[], object], timeout: float = 20.0) -> None:
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: bool(condition()))

    async def _ack(self, message: dict[str, Any]) -> None:
        async with self._changed:
            self.acks[message["envelope_id"]] = message
            self.acked_at[message["envelope_id"]] = time.monotonic()
            self._changed.notify_all()

    async def _change(self, change: Callable[[], object]) -> None:
        async with self._changed:
            change()
            self._changed.notify_all()
