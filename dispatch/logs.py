"""Run log lines: written in batches, read in order, streamed while the run goes on."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from contextlib import AsyncExitStack
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from core.clock import Clock
from core.db import Database
from core.models import LogEntry
from dispatch.batching import GroupCommit
from dispatch.events import RunEvents
from dispatch.rows import log_from_row
from dispatch.tables import run_logs

MAX_LINE = 16 * 1024
_TICK = timedelta(microseconds=1)


class LogWriter:
    """Appends lines to runs' logs without blocking the caller.

    Timestamps of one run strictly increase: the client resumes a dropped stream with
    ``after=<last createdAt>``, so two lines sharing a timestamp could lose the second.
    A line waits for the event loop's next turn before it goes to the writer: a run that ends
    first (a built-in) takes its lines into the transaction that completes it (``take``),
    which saves a commit per run.
    """

    def __init__(self, database: Database, clock: Clock, events: RunEvents) -> None:
        self._db = database
        self._clock = clock
        self._events = events
        self._last: dict[str, datetime] = {}
        self._inflight: defaultdict[str, set[asyncio.Future[None]]] = defaultdict(set)
        self._held: defaultdict[str, list[dict[str, Any]]] = defaultdict(list)
        self._handing_over = False
        self._commit: GroupCommit[dict[str, Any], None] = GroupCommit(
            self._write, name="run-logs", max_batch=2000
        )

    async def start(self, stack: AsyncExitStack) -> None:
        self._commit.start()
        stack.push_async_callback(self.aclose)

    async def aclose(self) -> None:
        self._hand_over()
        await self._commit.aclose()

    def append(self, run_id: str, stream: str, message: str) -> None:
        now = self._clock.now()
        last = self._last.get(run_id)
        if last is not None and now <= last:
            now = last + _TICK
        self._last[run_id] = now
        row = {"run_id": run_id, "created_at": now, "stream": stream, "message": message[:MAX_LINE]}
        self._held[run_id].append(row)
        if not self._handing_over:
            self._handing_over = True
            asyncio.get_running_loop().call_soon(self._hand_over)

    def _hand_over(self) -> None:
        self._handing_over = False
        held, self._held = self._held, defaultdict(list)
        for rows in held.values():
            self.put_back(rows)

    def put_back(self, rows: list[dict[str, Any]]) -> None:
        """Write ``rows`` (from ``take``) after all: their run's completion did not happen."""
        for row in rows:
            future = self._commit.submit_nowait(row)
            inflight = self._inflight[row["run_id"]]
            inflight.add(future)
            future.add_done_callback(inflight.discard)

    async def take(self, run_id: str) -> list[dict[str, Any]]:
        """The lines of ``run_id`` not handed to the writer yet, for the caller to store in its
        own transaction, once every earlier line is stored; forgets the run like ``settle``."""
        rows = self._held.pop(run_id, [])
        try:
            await self.settle(run_id)
        except asyncio.CancelledError:
            self.put_back(rows)
            raise
        return rows

    async def settle(self, run_id: str) -> None:
        """Wait until every line appended for ``run_id`` so far is stored; forget the run."""
        held = self._held.pop(run_id, None)
        if held:
            self.put_back(held)
        pending = list(self._inflight.pop(run_id, ()))
        self._last.pop(run_id, None)
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    async def _write(self, rows: list[dict[str, Any]]) -> list[BaseException | None]:
        async with self._db.write() as conn:
            await conn.execute(run_logs.insert(), rows)
        for run_id in {row["run_id"] for row in rows}:
            self._events.notify(run_id)
        return [None] * len(rows)


async def read_logs(
    database: Database,
    run_id: str,
    *,
    after_id: int = 0,
    after_time: datetime | None = None,
    limit: int = 1000,
) -> list[LogEntry]:
    query = (
        select(run_logs)
        .where(run_logs.c.run_id == run_id, run_logs.c.id > after_id)
        .order_by(run_logs.c.id)
        .limit(limit)
    )
    if after_time is not None:
        query = query.where(run_logs.c.created_at > after_time)
    async with database.read() as conn:
        return [log_from_row(row) for row in (await conn.execute(query)).mappings()]
