"""``core.run_catalog.RunControl``: cancel and replay runs.

Cancel is one conditional update: a queued (or provisioned) run is never claimed once it is
``cancelled``; a running one loses its lease with it, so its worker's next completion or lease
renewal finds it gone and stops it (``WorkerPool``'s lease loop cancels the run's task, and the
runner tears its sandbox down on cancellation, ``core.ports.WorkflowRunner``). On the node that
runs it that happens at once (``stop_local``); on another within a third of a lease. Completions
are conditional on the lease (``dispatch/queue.py``), so a cancelled run is never written over
and gets no reply.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Literal

from sqlalchemy import select, update

from core.clock import Clock
from core.db import Database
from core.errors import BadRequest, Conflict, NotFound
from core.json_input import parse_json
from core.models import ReplyTarget, RunRequest, RunStatus, Source, new_run_id
from core.ports import RunGateway
from core.run_catalog import RunItem
from dispatch.events import RunEvents
from dispatch.run_catalog import ITEM_COLUMNS, run_item
from dispatch.tables import run_logs, runs

logger = logging.getLogger(__name__)

CANCELLABLE = (RunStatus.PROVISIONED, RunStatus.QUEUED, RunStatus.RUNNING)


class RunController:
    """Cancels and replays runs (implements ``core.run_catalog.RunControl``)."""

    def __init__(
        self,
        database: Database,
        clock: Clock,
        gateway: RunGateway,
        events: RunEvents,
        *,
        stop_local: Callable[[str], bool] | None = None,
    ) -> None:
        self._db = database
        self._clock = clock
        self._gateway = gateway
        self._events = events
        self._stop_local = stop_local

    async def cancel(self, run_id: str, *, owner_id: str | None, actor: str) -> RunItem:
        now = self._clock.now()
        where = [runs.c.id == run_id]
        if owner_id is not None:
            where.append(runs.c.owner_id == owner_id)
        async with self._db.write() as conn:
            current = (await conn.execute(select(runs.c.status).where(*where))).scalar()
            if current is None:
                raise NotFound("run", run_id)
            result = await conn.execute(
                update(runs)
                .where(*where, runs.c.status.in_(CANCELLABLE))
                .values(
                    status=RunStatus.CANCELLED,
                    error=f"cancelled by {actor}",
                    completed_at=now,
                    lease_owner=None,
                    lease_expires_at=None,
                )
                .returning(*ITEM_COLUMNS)
            )
            row = result.mappings().first()
            if row is None:
                raise Conflict(f"run {run_id} has already finished (status {current})")
            await conn.execute(
                run_logs.insert().values(
                    run_id=run_id,
                    created_at=now,
                    stream="system",
                    message=f"run cancelled by {actor}",
                )
            )
        logger.info("run %s: cancelled by %s (was %s)", run_id, actor, current)
        if current == RunStatus.RUNNING and self._stop_local is not None:
            self._stop_local(run_id)
        self._events.notify(run_id)  # /result and /logs waiters see the end at once
        return run_item(row)

    async def replay(
        self,
        run_id: str,
        *,
        owner_id: str | None,
        actor: str,
        inputs: str | None,
        version: Literal["same", "latest"],
        reply: bool,
    ) -> RunItem:
        original = await self._gateway.get(run_id)
        if original is None or (owner_id is not None and original.owner_id != owner_id):
            raise NotFound("run", run_id)
        if original.status is RunStatus.PROVISIONED:
            raise Conflict(f"run {run_id} was provisioned but never filled: nothing to replay")
        if not await self._gateway.has_service(original.service_id):
            raise Conflict(f"workflow {original.service_id!r} of run {run_id} is not registered")
        if inputs is not None:
            parse_json(inputs, what="the replay's inputs")
        target = None
        if reply and original.reply_target is not None:
            try:
                target = ReplyTarget.model_validate(original.reply_target)
            except ValueError as exc:
                raise BadRequest(f"run {run_id}'s reply target cannot be used again") from exc
        submitted = await self._gateway.submit(
            RunRequest(
                owner_id=original.owner_id,
                service_id=original.service_id,
                path=original.path,
                method="GET" if original.method == "GET" else "POST",
                body=original.request_body if inputs is None else inputs,
                source=Source.REPLAY,
                reply_target=target,
                caller_id=actor,
                # Its conversation's order still holds when it answers there again.
                serial_key=original.serial_key if target is not None else None,
                context=original.context or {},
                run_id=new_run_id(),
                workflow_version=original.workflow_version if version == "same" else None,
                replay_of=original.id,
            )
        )
        logger.info("run %s: replayed by %s as %s", run_id, actor, submitted.id)
        async with self._db.read() as conn:
            row = (
                (await conn.execute(select(*ITEM_COLUMNS).where(runs.c.id == submitted.id)))
                .mappings()
                .one()
            )
        return run_item(row)
