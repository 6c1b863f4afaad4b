"""The durable run queue: every statement that moves a run from one state to the next.

States: provisioned → queued → running → completed | failed | timed_out. A worker holds a run
through a lease (``lease_owner`` + ``lease_expires_at``) that it renews while the run executes; a
run whose lease expired (its worker died) is claimed again, up to ``max_attempts`` times.
Completing is conditional on still holding the lease, so a run is completed exactly once even when
two workers ended up executing it.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Update, and_, func, or_, select, update
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.ext.asyncio import AsyncConnection

from core.clock import Clock
from core.db import Database
from core.errors import Conflict, NotFound
from core.models import Outcome, RunRecord, RunRequest, RunStatus, SubmittedRun, new_run_id
from core.tables import deliveries, runs
from dispatch.rows import run_from_row

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class NewHusk:
    """Intake item: create a provisioned, empty run."""

    owner_id: str
    caller_id: str | None
    run_id: str | None = None


IntakeItem = RunRequest | NewHusk


class RunQueue:
    """SQL for the run lifecycle. Stateless apart from its settings; safe to share."""

    def __init__(
        self,
        database: Database,
        clock: Clock,
        *,
        lease_seconds: float,
        max_attempts: int,
        per_workflow_limit: int,
    ) -> None:
        self._db = database
        self._clock = clock
        self._lease = timedelta(seconds=lease_seconds)
        self._max_attempts = max_attempts
        self._per_workflow_limit = per_workflow_limit

    # ---- intake ---------------------------------------------------------------------------

    async def write_intake(
        self, items: list[IntakeItem]
    ) -> list[SubmittedRun | str | BaseException]:
        """Persist a batch of intake items in one transaction (see ``GroupCommit``).

        Returns per item: the submitted run (``RunRequest``), the new husk's id (``NewHusk``), or
        the error that item alone caused.
        """
        now = self._clock.now()
        results: list[SubmittedRun | str | BaseException | None] = [None] * len(items)
        rows: list[dict[str, Any]] = []
        # Same idempotency key twice in one batch, or a key already stored: one run only.
        by_key: dict[str, list[int]] = {}
        async with self._db.write() as conn:
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
                    results[index] = SubmittedRun(row["id"], RunStatus.QUEUED, created=True)
                    if item.idempotency_key is not None:
                        by_key[item.idempotency_key] = [index]
            if by_key:
                stored = await conn.execute(
                    select(runs).where(runs.c.idempotency_key.in_(list(by_key)))
                )
                for existing in stored.mappings():
                    key = existing["idempotency_key"]
                    rows = [r for r in rows if r["idempotency_key"] != key]
                    earlier = SubmittedRun(
                        existing["id"], RunStatus(existing["status"]), created=False
                    )
                    for index in by_key.pop(key):
                        results[index] = earlier
                for indexes in by_key.values():
                    first = results[indexes[0]]
                    for duplicate in indexes[1:]:
                        if isinstance(first, SubmittedRun):
                            results[duplicate] = SubmittedRun(first.id, first.status, created=False)
            if rows:
                await self._insert(conn, rows)
        return [r if r is not None else RuntimeError("intake item not handled") for r in results]

    async def _insert(self, conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
        if not self._db.is_sqlite:
            await conn.execute(runs.insert(), rows)
            return
        # The intake hot path on SQLite: SQLAlchemy's per-row parameter processing cost more
        # than the insert itself (~30 µs a row). The values are ours and of few kinds, so convert
        # them the way its SQLite types would and hand the driver plain tuples.
        stamps: dict[datetime, str] = {}

        def plain(value: Any) -> Any:
            if isinstance(value, datetime):
                if value not in stamps:
                    stamps[value] = value.astimezone(UTC).strftime(SQLITE_DATETIME)
                return stamps[value]
            if isinstance(value, dict):
                return json.dumps(value)
            return value

        await conn.exec_driver_sql(
            _SQLITE_INSERT, [tuple(plain(row[column]) for column in INTAKE_COLUMNS) for row in rows]
        )

    async def _fill_husk(
        self, conn: AsyncConnection, item: RunRequest, now: datetime
    ) -> SubmittedRun | BaseException:
        run_id = item.provisioned_run_id or ""
        values = _run_row(item, now)
        for column in ("id", "created_at", "idempotency_key"):
            values.pop(column)
        result = await conn.execute(
            update(runs)
            .where(
                runs.c.id == run_id,
                runs.c.owner_id == item.owner_id,
                runs.c.status == RunStatus.PROVISIONED,
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

    # ---- workers --------------------------------------------------------------------------

    async def claim(self, worker_id: str, limit: int) -> list[RunRecord]:
        """Lease up to ``limit`` runnable runs, oldest first, honouring the per-workflow limit."""
        if limit <= 0:
            return []
        now = self._clock.now()
        async with self._db.write() as conn:
            running = await conn.execute(
                select(runs.c.service_id, func.count())
                .where(runs.c.status == RunStatus.RUNNING, runs.c.lease_expires_at >= now)
                .group_by(runs.c.service_id)
            )
            busy: Counter[str] = Counter({str(row[0]): int(row[1]) for row in running})
            query = (
                select(runs.c.id, runs.c.service_id, runs.c.status, runs.c.attempts)
                .where(
                    or_(
                        runs.c.status == RunStatus.QUEUED,
                        and_(runs.c.status == RunStatus.RUNNING, runs.c.lease_expires_at < now),
                    )
                )
                .order_by(runs.c.queued_at)
                .limit(limit * 4 + 16)
            )
            if not self._db.is_sqlite:
                query = query.with_for_update(skip_locked=True)
            picked: list[str] = []
            for run_id, service_id, status, attempts in await conn.execute(query):
                if len(picked) >= limit:
                    break
                if status == RunStatus.RUNNING and attempts >= self._max_attempts:
                    await self._give_up(conn, run_id, attempts, now)
                    continue
                if busy[service_id] >= self._per_workflow_limit:
                    continue
                busy[service_id] += 1
                picked.append(run_id)
            if not picked:
                return []
            result = await conn.execute(
                update(runs)
                .where(runs.c.id.in_(picked))
                .values(
                    status=RunStatus.RUNNING,
                    lease_owner=worker_id,
                    lease_expires_at=now + self._lease,
                    attempts=runs.c.attempts + 1,
                    started_at=now,
                )
                .returning(*runs.c)
            )
            claimed = [run_from_row(row) for row in result.mappings()]
        claimed.sort(key=lambda record: record.queued_at or record.created_at)
        return claimed

    async def _give_up(
        self, conn: AsyncConnection, run_id: str, attempts: int, now: datetime
    ) -> None:
        logger.error("run %s: giving up after %d attempts whose workers stopped", run_id, attempts)
        await conn.execute(
            update(runs)
            .where(runs.c.id == run_id)
            .values(
                status=RunStatus.FAILED,
                error=f"gave up after {attempts} attempts: its worker stopped each time",
                completed_at=now,
                lease_owner=None,
                lease_expires_at=None,
            )
        )

    async def renew(self, worker_id: str, run_ids: list[str]) -> set[str]:
        """Extend the leases ``worker_id`` holds; returns the ids it still holds."""
        if not run_ids:
            return set()
        now = self._clock.now()
        async with self._db.write() as conn:
            result = await conn.execute(
                update(runs)
                .where(
                    runs.c.id.in_(run_ids),
                    runs.c.lease_owner == worker_id,
                    runs.c.status == RunStatus.RUNNING,
                )
                .values(lease_expires_at=now + self._lease)
                .returning(runs.c.id)
            )
            return set(result.scalars())

    async def set_version(self, worker_id: str, run_id: str, version: int | None) -> None:
        async with self._db.write() as conn:
            await conn.execute(_held(worker_id, run_id).values(workflow_version=version))

    async def complete(
        self,
        worker_id: str,
        run_id: str,
        outcome: Outcome,
        reply: Callable[[datetime], dict[str, Any] | None] | None = None,
    ) -> bool:
        """Record how a run ended; ``False`` if this worker no longer held it (nothing written).

        ``reply`` builds the run's outbox row; it is inserted in the same transaction, so the
        reply exists if and only if the run is recorded as finished.
        """
        now = self._clock.now()
        async with self._db.write() as conn:
            result = await conn.execute(
                _held(worker_id, run_id).values(
                    status=outcome.status,
                    response_status=outcome.response_status,
                    response_body=outcome.response_body,
                    response_content_type=outcome.response_content_type,
                    error=outcome.error,
                    completed_at=now,
                    lease_owner=None,
                    lease_expires_at=None,
                )
            )
            if result.rowcount != 1:
                return False
            row = reply(now) if reply is not None else None
            if row is not None:
                await conn.execute(deliveries.insert().values(**row))
            return True

    async def release(self, worker_id: str, run_id: str) -> None:
        """Hand a run back unfinished (graceful shutdown); the attempt does not count."""
        async with self._db.write() as conn:
            await conn.execute(
                _held(worker_id, run_id).values(
                    status=RunStatus.QUEUED,
                    lease_owner=None,
                    lease_expires_at=None,
                    attempts=runs.c.attempts - 1,
                )
            )

    # ---- reads ----------------------------------------------------------------------------

    async def get(self, run_id: str) -> RunRecord | None:
        async with self._db.read() as conn:
            row = (await conn.execute(select(runs).where(runs.c.id == run_id))).mappings().first()
        return None if row is None else run_from_row(row)

    async def list_runs(
        self, *, owner_id: str | None = None, status: str | None = None, limit: int = 50
    ) -> list[RunRecord]:
        query = select(runs).order_by(runs.c.created_at.desc()).limit(limit)
        if owner_id is not None:
            query = query.where(runs.c.owner_id == owner_id)
        if status is not None:
            query = query.where(runs.c.status == status)
        async with self._db.read() as conn:
            return [run_from_row(row) for row in (await conn.execute(query)).mappings()]

    async def counts(self) -> dict[str, int]:
        async with self._db.read() as conn:
            result = await conn.execute(
                select(runs.c.status, func.count())
                .where(runs.c.status.in_([RunStatus.QUEUED, RunStatus.RUNNING]))
                .group_by(runs.c.status)
            )
            return {str(status): int(count) for status, count in result}


def _held(worker_id: str, run_id: str) -> Update:
    """An update of ``run_id`` that matches only while ``worker_id`` holds its lease."""
    return update(runs).where(
        runs.c.id == run_id, runs.c.lease_owner == worker_id, runs.c.status == RunStatus.RUNNING
    )


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
    "context",
    "request_body",
    "attempts",
    "created_at",
    "queued_at",
)
"""The columns intake writes: every row ``_husk_row`` and ``_run_row`` build has exactly these."""
SQLITE_DATETIME = "%Y-%m-%d %H:%M:%S.%f"  # SQLAlchemy's storage format for SQLite DATETIME
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
        "context": None,
        "request_body": None,
        "attempts": 0,
        "created_at": now,
        "queued_at": None,
    }


def _run_row(item: RunRequest, now: datetime) -> dict[str, Any]:
    run_id = item.run_id or new_run_id()
    return {
        "id": run_id,
        "owner_id": item.owner_id,
        "caller_id": item.caller_id,
        "service_id": item.service_id,
        "workflow_version": None,
        "path": item.path,
        "method": item.method,
        "status": RunStatus.QUEUED,
        "source": item.source.value,
        "reply_target": None
        if item.reply_target is None
        else item.reply_target.model_dump(mode="json"),
        "idempotency_key": item.idempotency_key,
        "correlation_id": item.correlation_id or run_id,
        "context": item.context or None,
        "request_body": item.body,
        "attempts": 0,
        "created_at": now,
        "queued_at": now,
    }
