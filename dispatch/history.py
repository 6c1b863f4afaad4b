"""What packages that do not own dispatch's tables read of its runs, and the one thing they
write to its deliveries: the ports :class:`core.ports.RunHistory`, :class:`core.ports.RunStates`,
:class:`core.ports.ChatActivity` and :class:`core.ports.DeliveryFailures`."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from core.clock import Clock
from core.db import Database
from core.models import FINISHED_STATUSES, RunStatus, RunSummary, Source
from dispatch.tables import deliveries, runs


class RunHistoryReader:
    """Reads the runs table for :class:`core.ports.RunHistory` (the scheduler's run history),
    :class:`core.ports.RunStates` (run keys) and :class:`core.ports.ChatActivity` (WhatsApp)."""

    def __init__(self, database: Database) -> None:
        self._db = database

    async def runs_by_key_prefix(self, owner_id: str, prefix: str, limit: int) -> list[RunSummary]:
        query = (
            select(
                runs.c.id,
                runs.c.status,
                runs.c.idempotency_key,
                runs.c.created_at,
                runs.c.completed_at,
            )
            .where(
                runs.c.owner_id == owner_id,
                runs.c.idempotency_key.startswith(prefix, autoescape=True),
            )
            .order_by(runs.c.created_at.desc(), runs.c.id.desc())
            .limit(limit)
        )
        async with self._db.read() as conn:
            rows = (await conn.execute(query)).all()
        return [
            RunSummary(
                row.id, RunStatus(row.status), row.idempotency_key, row.created_at, row.completed_at
            )
            for row in rows
        ]

    async def is_running(self, run_id: str, owner_id: str) -> bool:
        async with self._db.read() as conn:
            status = await conn.scalar(
                select(runs.c.status).where(runs.c.id == run_id, runs.c.owner_id == owner_id)
            )
        return status is not None and RunStatus(status) not in FINISHED_STATUSES

    async def last_run_at(self, serial_key: str, source: Source) -> datetime | None:
        # ix_runs_serial_key_created_at serves this.
        async with self._db.read() as conn:
            moment: datetime | None = (
                await conn.execute(
                    select(func.max(runs.c.created_at)).where(
                        runs.c.serial_key == serial_key, runs.c.source == source.value
                    )
                )
            ).scalar()
        return moment


class DeliveryFailureWriter:
    """:class:`core.ports.DeliveryFailures` over the deliveries table."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock

    async def mark_failed(self, conn: AsyncConnection, delivery_id: int, error: str) -> None:
        await conn.execute(
            update(deliveries)
            .where(deliveries.c.id == delivery_id)
            .values(status="failed", last_error=error, updated_at=self._clock.now())
        )
