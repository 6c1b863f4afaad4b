"""``/logs`` streams end: when the client leaves, when their life is over, when the husk they
follow expires unfilled, and at shutdown (which does not wait for them)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import httpx

from tests.conftest import Live, LiveFactory


async def provision(live: Live) -> str:
    async with httpx.AsyncClient(base_url=live.url) as http:
        answer = await http.post("/provision-request", headers={"Authorization": live.key})
    run_id: str = answer.json()["request_id"]
    return run_id


async def open_raw_stream(live: Live, run_id: str) -> asyncio.StreamWriter:
    """A /logs request whose answer has started; the caller decides when to hang up."""
    port = int(live.url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"GET /logs/{run_id} HTTP/1.1\r\nHost: x\r\nAuthorization: {live.key}\r\n\r\n".encode()
    )
    await writer.drain()
    async with asyncio.timeout(10):
        head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    return writer


async def wait_until(condition: Callable[[], bool], *, seconds: float = 10) -> None:
    """Poll ``condition`` (state in this process) until it holds, or fail after ``seconds``."""
    async with asyncio.timeout(seconds):
        while True:
            if condition():
                return
            await asyncio.sleep(0.05)  # polling the server's state: nothing to subscribe to


async def test_a_stream_stops_following_when_its_client_leaves(live: Live) -> None:
    run_id = await provision(live)
    events = live.services.events
    writer = await open_raw_stream(live, run_id)
    await wait_until(lambda: events.watched(run_id))

    writer.close()
    await writer.wait_closed()

    # Checked only at await points, where the old poll loop was always subscribed.
    await wait_until(lambda: not events.watched(run_id))


async def test_a_stream_ends_after_logs_max_seconds(live_factory: LiveFactory) -> None:
    live = await live_factory.start(runtime={"logs_max_seconds": 1})
    run_id = await provision(live)
    started = time.monotonic()

    async with httpx.AsyncClient(base_url=live.url, timeout=20) as http:
        answer = await http.get(f"/logs/{run_id}", headers={"Authorization": live.key})

    assert answer.status_code == 200 and answer.text == ""
    assert time.monotonic() - started < 5


async def test_a_husk_never_filled_expires_and_its_stream_and_result_end(
    live_factory: LiveFactory,
) -> None:
    live = await live_factory.start(runtime={"provision_ttl": 1})
    run_id = await provision(live)
    headers = {"Authorization": live.key}

    async with httpx.AsyncClient(base_url=live.url, timeout=20) as http:
        logs = await http.get(f"/logs/{run_id}", headers=headers)
        result = await http.get(f"/result/{run_id}", headers=headers)
        fill = await http.post(
            "/run_async/echo", json=1, headers={**headers, "X-Provisioned-Request-Id": run_id}
        )

    assert logs.status_code == 200
    record = result.json()
    assert result.status_code == 200 and record["status"] == "failed"
    assert record["error"] == "never filled within 1 s of being provisioned (runtime.provision_ttl)"
    assert fill.status_code == 409


async def test_shutdown_does_not_wait_for_open_log_streams(live_factory: LiveFactory) -> None:
    live = await live_factory.start()
    writers = [await open_raw_stream(live, await provision(live)) for _ in range(3)]
    started = time.monotonic()

    await live_factory.stop(live)

    assert time.monotonic() - started < 10
    for writer in writers:
        writer.close()
