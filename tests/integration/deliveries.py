"""Watching the outbox from a test: a run's delivery row once it reaches a status, and a webhook
endpoint that records what the outbox sent it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from sqlalchemy import select

from dispatch.tables import deliveries
from tests.conftest import Live


async def wait_for_delivery(
    live: Live, run_id: str, status: str, timeout: float = 20
) -> dict[str, Any]:
    """The run's delivery once it reached ``status`` (woken by run events, re-read every 0.1 s)."""
    events = live.services.events
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        # Subscribe before reading (RunEvents.subscribe): a change between the two is not missed.
        change = events.subscribe(run_id)
        async with live.services.database.read() as conn:
            row = (
                (await conn.execute(select(deliveries).where(deliveries.c.run_id == run_id)))
                .mappings()
                .first()
            )
        if row is not None and row["status"] == status:
            events.unsubscribe(run_id, change)
            return dict(row)
        await events.wait(run_id, change, 0.1)
    raise AssertionError(f"the delivery of {run_id} never reached {status!r}")


async def delivery_rows(live: Live) -> list[dict[str, Any]]:
    async with live.services.database.read() as conn:
        rows = await conn.execute(select(deliveries).order_by(deliveries.c.id))
        return [dict(row) for row in rows.mappings()]


async def wait_for_rows(
    live: Live, condition: Callable[[dict[str, Any]], bool], timeout: float = 20
) -> list[dict[str, Any]]:
    """The delivery rows, once one of them meets ``condition``."""
    async with asyncio.timeout(timeout):
        while True:
            rows = await delivery_rows(live)
            if any(condition(row) for row in rows):
                return rows
            await asyncio.sleep(0.05)  # polling the database: nothing to subscribe to here


@dataclass
class Receiver:
    """A webhook endpoint on loopback that records what it got and fails on request."""

    url: str = ""
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    failures_left: int = 0
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    gates: list[asyncio.Event] = field(default_factory=list)
    """Each request takes the next gate (if any) and answers only once it is set."""
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def wait_for(self, count: int) -> None:
        async with self.changed:
            await self.changed.wait_for(lambda: len(self.received) >= count)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        async with self.changed:
            self.received.append((dict(request.headers), body))
            self.changed.notify_all()
        self.arrived.set()
        if self.gates:
            await self.gates.pop(0).wait()
        if self.failures_left > 0:
            self.failures_left -= 1
            return web.Response(status=503, headers={"Retry-After": "0"})
        return web.Response(status=204)
