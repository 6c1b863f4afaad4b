"""Runs listed by idempotency-key prefix: :class:`core.ports.RunHistory` over the runs table."""

from __future__ import annotations

from sqlalchemy import select

from core.db import Database
from core.models import RunStatus, RunSummary
from core.tables import runs


class RunHistoryReader:
    """Reads the runs table for :class:`core.ports.RunHistory` (the scheduler's run history)."""

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
