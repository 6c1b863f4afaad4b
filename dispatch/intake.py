"""Intake writes: many run requests (and provisioned husks) committed in one transaction.

``QueueGateway`` feeds these through ``GroupCommit``; this module is only the SQL, and the one
place that knows a new run's row. Dedupe happens here: a repeated idempotency key (in the batch
or already stored) yields the run that key made; a provisioned husk is filled exactly once.

A provisioned husk (``/provision-request``) is filled by a request of the same source naming it
in ``provisioned_run_id``. On PostgreSQL two
nodes can insert the same idempotency key at once (neither sees the other's row before it
commits): the insert skips a conflicting key and the run that key made is read back instead, so
the duplicate is answered as a duplicate rather than failing its batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.ext.asyncio import AsyncConnection

from core.clock import Clock
from core.db import Database
from core.errors import Conflict, NotFound
from core.inbox import AcceptedEvent, ArrivingEvent
from core.models import RunRecord, RunRequest, RunStatus, SubmittedRun, new_run_id
from dispatch import sqlite_driver
from dispatch.inbox_writer import InboxWriter
from dispatch.queue import RunQueue
from dispatch.sqlite_driver import PlainValues
from dispatch.tables import runs


@dataclass(frozen=True, slots=True)
class NewHusk:
    """Intake item: create a provisioned, empty run."""

    owner_id: str
    caller_id: str | None
    run_id: str | None = None


@dataclass(frozen=True, slots=True)
class LocalRun:
    """Intake item: a run request whose caller waits on this node, where ``worker_id`` has a
    worker free for it: the run is leased to that worker in the intake's own transaction when
    it may start now (``RunQueue.claim_submitted``), else it is queued as usual."""

    request: RunRequest
    worker_id: str


@dataclass(frozen=True, slots=True)
class ClaimedHere:
    """A ``LocalRun``'s result when it was leased in the intake transaction."""

    submitted: SubmittedRun
    run: RunRecord


IntakeItem = RunRequest | NewHusk


class IntakeWriter:
    """SQL for the intake batch (see ``GroupCommit``)."""

    def __init__(
        self,
        database: Database,
        clock: Clock,
        inbox: InboxWriter | None = None,
        *,
        claims: RunQueue | None = None,
    ) -> None:
        self._db = database
        self._clock = clock
        self._inbox = inbox
        self._claims = claims

    async def write(self, items: list[IntakeItem]) -> list[SubmittedRun | str | BaseException]:
        """Persist a batch of intake items in one transaction (see ``GroupCommit``).

        Returns per item: the submitted run (``RunRequest``), the new husk's id (``NewHusk``), or
        the error that item alone caused.
        """
        async with self._db.write() as conn:
            # Under the write lock: created_at orders a conversation's runs (dispatch/queue.py).
            return await self.write_in(conn, items, self._clock.now())

    async def write_with_events(
        self, items: list[IntakeItem | ArrivingEvent]
    ) -> list[SubmittedRun | str | AcceptedEvent | BaseException]:
        """:meth:`write`, with the inbox events that arrived in the same batch (one commit).

        An ``ArrivingEvent``'s answer is its ``AcceptedEvent``; this node's inbox processor is
        woken once the batch is committed.
        """
        written = await self.write_batch(list(items))  # no LocalRun in: no ClaimedHere out
        return cast("list[SubmittedRun | str | AcceptedEvent | BaseException]", written)

    async def write_batch(
        self, items: list[IntakeItem | ArrivingEvent | LocalRun]
    ) -> list[SubmittedRun | str | AcceptedEvent | ClaimedHere | BaseException]:
        """:meth:`write_with_events`, where a ``LocalRun`` answers ``ClaimedHere`` when it was
        leased to its worker in the same transaction (the gateway's batch)."""
        runs_at: list[int] = []
        requests: list[IntakeItem] = []
        local: dict[int, str] = {}  # position in requests: the worker a LocalRun waits on
        events_at: list[int] = []
        events: list[ArrivingEvent] = []
        for index, item in enumerate(items):
            if isinstance(item, ArrivingEvent):
                events_at.append(index)
                events.append(item)
            elif isinstance(item, LocalRun):
                local[len(requests)] = item.worker_id
                runs_at.append(index)
                requests.append(item.request)
            else:
                runs_at.append(index)
                requests.append(item)
        if events and self._inbox is None:
            raise RuntimeError("this intake has no inbox to accept events into")
        results: list[SubmittedRun | str | AcceptedEvent | ClaimedHere | BaseException | None]
        results = [None] * len(items)
        woken = False
        async with self._db.write() as conn:
            # Under the write lock: created_at orders a conversation's runs (dispatch/queue.py).
            now = self._clock.now()
            if requests:
                written: list[SubmittedRun | str | ClaimedHere | BaseException | None]
                written = list(await self.write_in(conn, requests, now))
                if local and self._claims is not None:
                    await self._claim_local(conn, self._claims, local, requests, written)
                for index, result in zip(runs_at, written, strict=True):
                    results[index] = result
            if events and self._inbox is not None:
                accepted = await self._inbox.write_in(conn, events, now)
                for index, answer in zip(events_at, accepted, strict=True):
                    results[index] = answer
                    if isinstance(answer, AcceptedEvent) and not (answer.duplicate or answer.held):
                        woken = True
        if woken and self._inbox is not None:  # committed: this node's processor may take them
            self._inbox.work_available.set()
        return [r if r is not None else RuntimeError("intake item not handled") for r in results]

    async def write_in(
        self, conn: AsyncConnection, items: list[IntakeItem], now: datetime
    ) -> list[SubmittedRun | str | BaseException]:
        """Write ``items`` in ``conn``'s transaction (``now`` read inside it, after its locks):
        the intake batch, or the run requests an inbox event made (dispatch/inbox_processor.py).
        """
        results: list[SubmittedRun | str | BaseException | None] = [None] * len(items)
        rows: list[dict[str, Any]] = []
        # Same idempotency key twice in one batch, or a key already stored: one run only.
        by_key: dict[str, list[int]] = {}
        for index, item in enumerate(items):
            if isinstance(item, NewHusk):
                run_id = item.run_id or new_run_id()
                rows.append(_husk_row(run_id, item, now))
                results[index] = run_id
            elif item.provisioned_run_id is not None:
                results[index] = await self._fill_husk(conn, item, now)
            elif item.idempotency_key is not None and item.idempotency_key in by_key:
                by_key[item.idempotency_key].append(index)
            else:
                row = _run_row(item, now)
                rows.append(row)
                results[index] = SubmittedRun(row["id"], row["status"], created=True)
                if item.idempotency_key is not None:
                    by_key[item.idempotency_key] = [index]
        if by_key:
            for key, run_id, status in await self._stored_keys(conn, list(by_key)):
                rows = [r for r in rows if r["idempotency_key"] != key]
                earlier = SubmittedRun(run_id, RunStatus(status), created=False)
                for index in by_key.pop(key):
                    results[index] = earlier
            for indexes in by_key.values():
                first = results[indexes[0]]
                for duplicate in indexes[1:]:
                    if isinstance(first, SubmittedRun):
                        results[duplicate] = SubmittedRun(first.id, first.status, created=False)
        if rows:
            skipped = await self._insert(conn, rows)
            if skipped:
                await self._answer_skipped(conn, skipped, items, results)
        return [r if r is not None else RuntimeError("intake item not handled") for r in results]

    async def _stored_keys(
        self, conn: AsyncConnection, keys: list[str]
    ) -> list[tuple[str, str, str]]:
        """(idempotency key, run id, status) of the runs some of ``keys`` made already.

        Every inbox event's run requests carry a key, so the processor's batches ask this each
        time: on SQLite in one driver call (dispatch/sqlite_driver), not SQLAlchemy's four.
        """
        if self._db.is_sqlite:
            marks = ", ".join("?" * len(keys))
            sql = f"SELECT idempotency_key, id, status FROM runs WHERE idempotency_key IN ({marks})"  # noqa: S608
            return [(k, i, s) for k, i, s in await sqlite_driver.fetchall(conn, sql, keys)]
        stored = await conn.execute(
            select(runs.c.idempotency_key, runs.c.id, runs.c.status).where(
                runs.c.idempotency_key.in_(keys)
            )
        )
        return [(k, i, s) for k, i, s in stored]

    async def _claim_local(
        self,
        conn: AsyncConnection,
        claims: RunQueue,
        local: dict[int, str],
        items: list[IntakeItem],
        results: list[SubmittedRun | str | ClaimedHere | BaseException | None],
    ) -> None:
        """Lease the new runs of ``LocalRun`` items to their workers (before the commit)."""
        by_worker: dict[str, dict[str, tuple[int, str, str]]] = {}
        for index, worker_id in local.items():
            result, item = results[index], items[index]
            if (
                isinstance(result, SubmittedRun)
                and result.created
                and isinstance(item, RunRequest)
                and item.serial_key is None
            ):
                new = by_worker.setdefault(worker_id, {})
                new[result.id] = (index, item.service_id, item.owner_id)
        for worker_id, new in by_worker.items():
            started = await claims.claim_submitted(
                conn,
                worker_id,
                [(run_id, service, owner) for run_id, (_, service, owner) in new.items()],
            )
            for run in started:
                index = new[run.id][0]
                submitted = results[index]
                if isinstance(submitted, SubmittedRun):
                    results[index] = ClaimedHere(submitted, run)

    async def _answer_skipped(
        self,
        conn: AsyncConnection,
        keys: set[str],
        items: list[IntakeItem],
        results: list[SubmittedRun | str | BaseException | None],
    ) -> None:
        """Items whose key another node stored meanwhile get that node's run (a duplicate)."""
        stored = await conn.execute(
            select(runs.c.idempotency_key, runs.c.id, runs.c.status).where(
                runs.c.idempotency_key.in_(list(keys))
            )
        )
        earlier = {key: (run_id, status) for key, run_id, status in stored}
        for index, item in enumerate(items):
            if not isinstance(item, RunRequest) or item.provisioned_run_id is not None:
                continue
            key = item.idempotency_key
            if key is None or key not in keys:
                continue
            if key in earlier:
                run_id, status = earlier[key]
                results[index] = SubmittedRun(run_id, RunStatus(status), created=False)
            else:  # the conflicting row is gone again: let the caller (Twilio…) retry
                results[index] = Conflict(f"idempotency key {key!r} is being written elsewhere")

    async def _insert(self, conn: AsyncConnection, rows: list[dict[str, Any]]) -> set[str]:
        """Insert ``rows``; returns the idempotency keys skipped because they are stored now."""
        if not self._db.is_sqlite:
            keyed = {row["idempotency_key"] for row in rows if row["idempotency_key"] is not None}
            if not keyed:
                await conn.execute(runs.insert(), rows)
                return set()
            # A concurrent transaction may have inserted one of these keys after our check:
            # skip it (ON CONFLICT DO NOTHING waits for that transaction, then skips).
            inserted = await conn.execute(
                postgresql.insert(runs)
                .on_conflict_do_nothing(index_elements=[runs.c.idempotency_key])
                .returning(runs.c.idempotency_key),
                rows,
            )
            return keyed - {key for (key,) in inserted}
        # SQLite: the check and the insert are one BEGIN IMMEDIATE transaction (one writer).
        # The intake hot path on SQLite: SQLAlchemy's per-row parameter processing cost more
        # than the insert itself (~30 µs a row), and its cursor three thread hops. The values
        # are ours and of few kinds: plain tuples straight to the driver (dispatch/sqlite_driver).
        plain = PlainValues()
        await sqlite_driver.executemany(
            conn, _SQLITE_INSERT, [tuple(plain(row[c]) for c in INTAKE_COLUMNS) for row in rows]
        )
        return set()

    async def _fill_husk(
        self, conn: AsyncConnection, item: RunRequest, now: datetime
    ) -> SubmittedRun | BaseException:
        run_id = item.provisioned_run_id or ""
        values = _run_row(item, now)
        for column in ("id", "created_at", "idempotency_key"):
            values.pop(column)
        values["correlation_id"] = item.correlation_id or run_id
        result = await conn.execute(
            update(runs)
            .where(
                runs.c.id == run_id,
                runs.c.owner_id == item.owner_id,
                runs.c.status == RunStatus.PROVISIONED,
                # A husk is filled by the intake that made it only (an API husk by the API).
                runs.c.source == item.source.value,
            )
            .values(**values)
        )
        if result.rowcount == 1:
            return SubmittedRun(run_id, RunStatus.QUEUED, created=True)
        current = (
            await conn.execute(
                select(runs.c.status).where(runs.c.id == run_id, runs.c.owner_id == item.owner_id)
            )
        ).first()
        if current is None:
            return NotFound("provisioned request", run_id)
        return Conflict(f"request {run_id} was already started (status {current.status})")


INTAKE_COLUMNS = (
    "id",
    "owner_id",
    "caller_id",
    "service_id",
    "workflow_version",
    "path",
    "method",
    "status",
    "source",
    "reply_target",
    "idempotency_key",
    "correlation_id",
    "serial_key",
    "context",
    "request_body",
    "attempts",
    "created_at",
    "queued_at",
    "replay_of",
)
"""The columns intake writes: every row ``_husk_row`` and ``_run_row`` build has exactly these."""
_SQLITE_INSERT_COMPILED = runs.insert().compile(
    dialect=sqlite_dialect.dialect(paramstyle="qmark"), column_keys=list(INTAKE_COLUMNS)
)
_SQLITE_INSERT = str(_SQLITE_INSERT_COMPILED)
if tuple(_SQLITE_INSERT_COMPILED.positiontup or ()) != INTAKE_COLUMNS:
    raise RuntimeError("the compiled intake insert does not bind INTAKE_COLUMNS in order")


def _husk_row(run_id: str, item: NewHusk, now: datetime) -> dict[str, Any]:
    return {
        "id": run_id,
        "owner_id": item.owner_id,
        "caller_id": item.caller_id,
        "service_id": "",
        "workflow_version": None,
        "path": "",
        "method": "POST",
        "status": RunStatus.PROVISIONED,
        "source": "api",
        "reply_target": None,
        "idempotency_key": None,
        "correlation_id": None,
        "serial_key": None,
        "context": None,
        "request_body": None,
        "attempts": 0,
        "created_at": now,
        "queued_at": None,
        "replay_of": None,
    }


def _run_row(item: RunRequest, now: datetime) -> dict[str, Any]:
    run_id = item.run_id or new_run_id()
    return {
        "id": run_id,
        "owner_id": item.owner_id,
        "caller_id": item.caller_id,
        "service_id": item.service_id,
        "workflow_version": item.workflow_version,
        "path": item.path,
        "method": item.method,
        "status": RunStatus.QUEUED,
        "source": item.source.value,
        "reply_target": None
        if item.reply_target is None
        else item.reply_target.model_dump(mode="json"),
        "idempotency_key": item.idempotency_key,
        "correlation_id": item.correlation_id or run_id,
        "serial_key": item.serial_key,
        "context": item.context or None,
        "request_body": item.body,
        "attempts": 0,
        "created_at": now,
        "queued_at": now,
        "replay_of": item.replay_of,
    }
