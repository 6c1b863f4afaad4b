"""Connections that dribble, idle or speak broken HTTP: closed on time, answered in JSON."""

from __future__ import annotations

import asyncio
import json
import logging
import time

import pytest

from tests.conftest import Live, LiveFactory

TIMEOUTS = {"header_timeout": 1, "body_timeout": 1}


async def connect(live: Live) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    port = int(live.url.rsplit(":", 1)[1])
    return await asyncio.open_connection("127.0.0.1", port)


async def dribble(writer: asyncio.StreamWriter, data: bytes, *, every: float) -> None:
    """Send ``data`` one byte at a time, as a slow-loris client does."""
    for byte in data:
        writer.write(bytes([byte]))
        await writer.drain()
        await asyncio.sleep(every)  # the client's pace, not a wait for the server


async def closed_by_server(reader: asyncio.StreamReader, *, within: float) -> bytes:
    """Everything the server sent before it closed the connection (fails if it does not)."""
    received = bytearray()
    async with asyncio.timeout(within):
        try:
            while chunk := await reader.read(65536):
                received += chunk
        except ConnectionResetError:
            pass
    return bytes(received)


async def test_a_connection_dribbling_its_headers_is_closed_after_header_timeout(
    live_factory: LiveFactory,
) -> None:
    live = await live_factory.start(server=TIMEOUTS)
    reader, writer = await connect(live)
    started = time.monotonic()
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200
    sending = asyncio.create_task(dribble(writer, head, every=0.1))
    try:
        await closed_by_server(reader, within=5)
    finally:
        sending.cancel()
        await asyncio.gather(sending, return_exceptions=True)
        writer.close()
    assert time.monotonic() - started < 4


async def test_an_idle_connection_is_closed_after_header_timeout(
    live_factory: LiveFactory,
) -> None:
    live = await live_factory.start(server=TIMEOUTS)
    reader, writer = await connect(live)
    try:
        assert await closed_by_server(reader, within=5) == b""
    finally:
        writer.close()


async def test_a_body_dribbling_in_is_answered_408_after_body_timeout(
    live_factory: LiveFactory, caplog: pytest.LogCaptureFixture
) -> None:
    live = await live_factory.start(server=TIMEOUTS)
    reader, writer = await connect(live)
    body = b'{"n": "' + b"x" * 100 + b'"}'
    head = (
        f"POST /run/echo HTTP/1.1\r\nHost: x\r\nAuthorization: {live.key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    writer.write(head)
    sending = asyncio.create_task(dribble(writer, body, every=0.1))
    try:
        answer = await closed_by_server(reader, within=5)
    finally:
        sending.cancel()
        await asyncio.gather(sending, return_exceptions=True)
        writer.close()
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 408"), answer
    detail = json.loads(rest.partition(b"\r\n\r\n")[2])["detail"]
    assert "server.body_timeout" in detail
    assert await live.services.queue.list_runs() == []
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nthis is no header\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 10_000 + b"\r\n\r\n",
        b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n",
    ],
    ids=["bad-header-line", "header-too-long", "tls-hello"],
)
async def test_a_request_aiohttp_cannot_parse_is_answered_in_json(
    live: Live, caplog: pytest.LogCaptureFixture, request_bytes: bytes
) -> None:
    reader, writer = await connect(live)
    writer.write(request_bytes)
    await writer.drain()
    try:
        answer = await closed_by_server(reader, within=5)
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.split()[1] == b"400", answer
    assert b"Content-Type: application/json" in head
    assert json.loads(body)["detail"].startswith("malformed HTTP request")
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
