"""The ``schedules`` table: definitions (which bump the change counter) and fire state (which
does not: the leader writes it many times a second and must not wake itself)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, case, delete, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from core.clock import isoformat
from core.db import Database
from core.errors import Conflict, NotFound
from core.ports import RunHistory
from scheduler.models import Schedule, ScheduleSpec
from scheduler.tables import schedule_changes, schedules
from scheduler.ticks import history_prefix

_DEFINITION = {
    "service_id",
    "cron",
    "timezone",
    "inputs",
    "deliver_to",
    "misfire_policy",
    "misfire_grace",
    "overlap_policy",
    "jitter",
    "paused",
}


@dataclass(slots=True)
class TickRecord:
    """What happened to one schedule since the last flush (merged per schedule)."""

    schedule_id: str
    owner_id: str
    last_fire_at: datetime | None = None
    next_fire_at: datetime | None = None
    last_run_id: str | None = None
    fired: int = 0
    skipped: int = 0
    missed: int = 0

    def merge(self, later: TickRecord) -> None:
        # Fire times only move forward: a catch-up tick that finishes after newer live ticks
        # must not rewind them (the next fire time goes with the latest fire).
        older = (
            later.last_fire_at is not None
            and self.last_fire_at is not None
            and later.last_fire_at < self.last_fire_at
        )
        if later.last_fire_at is not None and not older:
            self.last_fire_at = later.last_fire_at
        if later.next_fire_at is not None and not older:
            self.next_fire_at = later.next_fire_at
        self.last_run_id = later.last_run_id or self.last_run_id
        self.fired += later.fired
        self.skipped += later.skipped
        self.missed += later.missed


class ScheduleStore:
    """SQL for schedules. Ids are unique per owner. ``owner_id=None`` means "any owner" (the
    administrator's CLI): it names the one schedule of that id, and refuses an id that several
    owners use."""

    def __init__(self, database: Database, runs: RunHistory) -> None:
        self._db = database
        self._runs = runs

    async def revision(self) -> int:
        async with self._db.read() as conn:
            value = await conn.scalar(select(schedule_changes.c.revision))
        return int(value or 0)

    async def _bump(self, conn: AsyncConnection) -> int:
        # The row lock serialises definition writers: revisions are handed out in commit order.
        result = await conn.execute(
            update(schedule_changes)
            .where(schedule_changes.c.id == 1)
            .values(revision=schedule_changes.c.revision + 1)
            .returning(schedule_changes.c.revision)
        )
        value = result.scalar()
        if value is None:
            await conn.execute(insert(schedule_changes).values(id=1, revision=1))
            return 1
        return int(value)

    async def insert(
        self,
        spec: ScheduleSpec,
        *,
        schedule_id: str,
        owner_id: str,
        now: datetime,
        next_fire_at: datetime | None,
        from_config: bool = False,
    ) -> Schedule:
        try:
            return await self._insert(spec, schedule_id, owner_id, now, next_fire_at, from_config)
        except IntegrityError as exc:
            # Two nodes creating the same schedule (the same ``[[schedules]]`` at a first start):
            # the other one's insert committed between our check and ours.
            raise Conflict(f"schedule {schedule_id!r} already exists") from exc

    async def _insert(
        self,
        spec: ScheduleSpec,
        schedule_id: str,
        owner_id: str,
        now: datetime,
        next_fire_at: datetime | None,
        from_config: bool,
    ) -> Schedule:
        async with self._db.write() as conn:
            exists = await conn.scalar(select(schedules.c.id).where(*_owned(schedule_id, owner_id)))
            if exists is not None:
                raise Conflict(f"schedule {schedule_id!r} already exists")
            row = {
                **spec.model_dump(mode="json", include=_DEFINITION),
                "id": schedule_id,
                "owner_id": owner_id,
                "revision": await self._bump(conn),
                "next_fire_at": next_fire_at,
                "fired_count": 0,
                "skipped_count": 0,
                "missed_count": 0,
                "created_at": now,
                "updated_at": now,
                "from_config": from_config,
            }
            await conn.execute(insert(schedules).values(**row))
        return Schedule.model_validate(row)

    async def replace(
        self,
        schedule_id: str,
        owner_id: str | None,
        spec: ScheduleSpec,
        *,
        now: datetime,
        next_fire_at: datetime | None,
        from_config: bool | None = None,
    ) -> Schedule:
        """Store a new definition; the fire state (last fire, counters) is kept.
        ``from_config``: mark it made from (or no longer from) the config; ``None``: unchanged."""
        async with self._db.write() as conn:
            owner_id = await _owner_of(conn, schedule_id, owner_id)
            values = spec.model_dump(mode="json", include=_DEFINITION)
            if from_config is not None:
                values["from_config"] = from_config
            result = await conn.execute(
                update(schedules)
                .where(*_owned(schedule_id, owner_id))
                .values(
                    **values,
                    revision=await self._bump(conn),
                    next_fire_at=next_fire_at,
                    updated_at=now,
                )
            )
            if result.rowcount != 1:
                raise NotFound("schedule", schedule_id)
            return await _fetch(conn, schedule_id, owner_id)

    async def delete(self, schedule_id: str, owner_id: str | None) -> None:
        async with self._db.write() as conn:
            owner_id = await _owner_of(conn, schedule_id, owner_id)
            result = await conn.execute(delete(schedules).where(*_owned(schedule_id, owner_id)))
            if result.rowcount != 1:
                raise NotFound("schedule", schedule_id)
            await self._bump(conn)

    async def get(self, schedule_id: str, owner_id: str | None) -> Schedule:
        async with self._db.read() as conn:
            owner_id = await _owner_of(conn, schedule_id, owner_id)
            row = (
                (await conn.execute(select(schedules).where(*_owned(schedule_id, owner_id))))
                .mappings()
                .first()
            )
        if row is None:
            raise NotFound("schedule", schedule_id)
        return Schedule.model_validate(dict(row))

    async def list_schedules(self, owner_id: str | None) -> list[Schedule]:
        query = select(schedules).order_by(schedules.c.created_at, schedules.c.id)
        if owner_id is not None:
            query = query.where(schedules.c.owner_id == owner_id)
        async with self._db.read() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [Schedule.model_validate(dict(row)) for row in rows]

    async def record(self, ticks: list[TickRecord]) -> None:
        """Write the fire state of many schedules in one transaction (counters add up).

        ``last_fire_at`` only moves forward (the later of the stored and the recorded one), and
        ``next_fire_at`` is taken only from a record that is not older than the stored last fire:
        a catch-up flushed after newer live ticks rewinds neither. (CASE, not ``GREATEST`` or
        SQLite's ``max``: one statement for both databases.)
        """
        if not ticks:
            return
        stored_last = schedules.c.last_fire_at
        recorded_last = bindparam("b_last", type_=stored_last.type)
        recorded_next = bindparam("b_next", type_=schedules.c.next_fire_at.type)
        statement = (
            update(schedules)
            .where(
                schedules.c.id == bindparam("b_id"), schedules.c.owner_id == bindparam("b_owner")
            )
            .values(
                last_fire_at=case(
                    (recorded_last.is_(None), stored_last),
                    (or_(stored_last.is_(None), recorded_last > stored_last), recorded_last),
                    else_=stored_last,
                ),
                next_fire_at=case(
                    (recorded_next.is_(None), schedules.c.next_fire_at),
                    (
                        or_(
                            recorded_last.is_(None),
                            stored_last.is_(None),
                            recorded_last >= stored_last,
                        ),
                        recorded_next,
                    ),
                    else_=schedules.c.next_fire_at,
                ),
                last_run_id=func.coalesce(
                    bindparam("b_run", type_=schedules.c.last_run_id.type), schedules.c.last_run_id
                ),
                fired_count=schedules.c.fired_count + bindparam("b_fired"),
                skipped_count=schedules.c.skipped_count + bindparam("b_skipped"),
                missed_count=schedules.c.missed_count + bindparam("b_missed"),
            )
        )
        parameters: list[dict[str, Any]] = [
            {
                "b_id": tick.schedule_id,
                "b_owner": tick.owner_id,
                "b_last": tick.last_fire_at,
                "b_next": tick.next_fire_at,
                "b_run": tick.last_run_id,
                "b_fired": tick.fired,
                "b_skipped": tick.skipped,
                "b_missed": tick.missed,
            }
            for tick in ticks
        ]
        async with self._db.write() as conn:
            await conn.execute(statement, parameters)

    async def history(self, owner_id: str, schedule_id: str, limit: int) -> list[dict[str, Any]]:
        """The schedule's most recent runs, newest first (the runs' own record has the rest)."""
        prefix = history_prefix(owner_id, schedule_id)
        found = await self._runs.runs_by_key_prefix(owner_id, prefix, limit)
        return [
            {
                "request_id": run.id,
                "status": run.status.value,
                "tick": (run.idempotency_key or "").removeprefix(prefix),
                "createdAt": isoformat(run.created_at),
                "completedAt": isoformat(run.completed_at),
            }
            for run in found
        ]


def _owned(schedule_id: str, owner_id: str) -> list[Any]:
    return [schedules.c.id == schedule_id, schedules.c.owner_id == owner_id]


async def _owner_of(conn: AsyncConnection, schedule_id: str, owner_id: str | None) -> str:
    """``owner_id``, or for "any owner" the one owner of a schedule with that id."""
    if owner_id is not None:
        return owner_id
    found = (
        await conn.execute(
            select(schedules.c.owner_id)
            .where(schedules.c.id == schedule_id)
            .order_by(schedules.c.owner_id)
        )
    ).all()
    if not found:
        raise NotFound("schedule", schedule_id)
    if len(found) > 1:
        owners = ", ".join(str(row.owner_id) for row in found)
        raise Conflict(
            f"schedule {schedule_id!r} exists for several owners ({owners}): name the owner"
        )
    return str(found[0].owner_id)


async def _fetch(conn: AsyncConnection, schedule_id: str, owner_id: str) -> Schedule:
    row = (
        (await conn.execute(select(schedules).where(*_owned(schedule_id, owner_id))))
        .mappings()
        .one()
    )
    return Schedule.model_validate(dict(row))
