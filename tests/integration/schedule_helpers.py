"""What the schedule tests share: a per-second cron, polling with a deadline, a schedule's runs,
the live server's scheduler node, a clock that stands still."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TypeVar

from sqlalchemy import select

from core.models import RunRecord
from dispatch.tables import runs
from scheduler.node import SchedulerNode
from switchboard.app import SCHEDULER
from tests.conftest import Live

T = TypeVar("T")
EVERY_SECOND = "* * * * * *"


async def eventually(check: Callable[[], Awaitable[T | None]], what: str, timeout: float = 20) -> T:
    """Poll ``check`` until it returns something truthy (condition wait with a deadline)."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def schedule_runs(live: Live, service: str) -> list[RunRecord]:
    async with live.services.database.read() as conn:
        ids = (
            await conn.execute(
                select(runs.c.id)
                .where(
                    runs.c.idempotency_key.startswith(
                        f"schedule:default/{service}:", autoescape=True
                    )
                )
                .order_by(runs.c.created_at)
            )
        ).all()
    # Outside the read above: each get takes a reader of its own (the pool is small).
    found = [await live.services.gateway.get(run_id) for (run_id,) in ids]
    return [record for record in found if record is not None]


def live_node(live: Live) -> SchedulerNode:
    assert live.app is not None
    return live.app[SCHEDULER]


class FixedClock:
    def __init__(self, now: datetime) -> None:
        self.moment = now

    def now(self) -> datetime:
        return self.moment
