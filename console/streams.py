"""Server-sent events for the console's live pages, ended together at shutdown.

A stream lives at most ``MAX_SECONDS`` (the browser's ``EventSource`` reconnects by itself), and
every open one ends when the server shuts down, so a console tab never holds up a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

from aiohttp import web

MAX_SECONDS = 300.0


class EventStreams:
    """The open streams: :meth:`open` one per request, :meth:`stop` ends them all."""

    def __init__(self) -> None:
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    @contextlib.asynccontextmanager
    async def open(self, request: web.Request) -> AsyncIterator[EventStream]:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"}
        )
        await response.prepare(request)
        yield EventStream(response, self._stopping, request)


class EventStream:
    def __init__(
        self, response: web.StreamResponse, stopping: asyncio.Event, request: web.Request
    ) -> None:
        self.response = response
        self._stopping = stopping
        self._request = request
        self._deadline = asyncio.get_running_loop().time() + MAX_SECONDS

    @property
    def open(self) -> bool:
        transport = self._request.transport
        alive = transport is not None and not transport.is_closing()
        return alive and not self._stopping.is_set() and self._time_left() > 0

    def _time_left(self) -> float:
        return self._deadline - asyncio.get_running_loop().time()

    async def send(self, event: str, data: object) -> None:
        payload = json.dumps(data, separators=(",", ":"), default=str)
        await self.response.write(f"event: {event}\ndata: {payload}\n\n".encode())

    async def pause(self, seconds: float) -> None:
        """Wait ``seconds`` (less at shutdown or the stream's end): the next poll's interval."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(min(seconds, max(self._time_left(), 0))):
                await self._stopping.wait()


STREAMS = web.AppKey("console_streams", EventStreams)
