"""Waiting on the outbox from a test: a run's delivery row once it reaches a status."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import select

from core.tables import deliveries
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
