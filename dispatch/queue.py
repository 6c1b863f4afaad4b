"""The durable run queue: every statement that moves a leased run to its end (see intake.py).

States: provisioned → queued → running → completed | failed | timed_out. A worker holds a run
through a lease (``lease_owner`` + ``lease_expires_at``) that it renews while the run executes; a
run whose lease expired (its worker died) is claimed again, up to ``max_attempts`` times.
Completing is conditional on still holding the lease, so a run is completed exactly once even when
two workers ended up executing it.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, Update, and_, exists, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from core.clock import Clock
from core.db import Database
from core.models import Outcome, RunRecord, RunStatus, Source
from core.tracing import TRACE
from dispatch.rows import run_from_row
from dispatch.tables import deliveries, run_logs, runs

logger = logging.getLogger(__name__)

CLAIM_LOCK_ID = 0x5357_4331  # "SWC1": the advisory lock that serialises claims on PostgreSQL
REFILLS = 4
"""Candidate windows one claim pass reads at most (see ``RunQueue._claim_in``)."""
PRIORITY_SOURCES = tuple(source.value for source in Source if source is not Source.API)
"""Claimed before API runs: schedules and conversations, someone or something waits on them."""


@dataclass(frozen=True, slots=True)
class Completion:
    """How one run ended, for ``RunQueue.complete_many``."""

    run_id: str
    outcome: Outcome
    reply: Callable[[datetime], dict[str, Any] | None] | None = None
    logs: list[dict[str, Any]] = field(default_factory=list)
    """Log rows not stored yet (``LogWriter.take``), written in the completing transaction."""
    started_at: datetime | None = None
    """When this attempt started (its claim): the run's ``duration_ms`` is counted from it."""


@dataclass(slots=True)
class _Load:
    """Running runs counted for one claim: per workflow, per owner, the serial keys held."""

    workflow_limit: int
    owner_limit: int | None
    workflows: Counter[str] = field(default_factory=Counter)
    owners: Counter[str] = field(default_factory=Counter)
    keys: set[str] = field(default_factory=set)
    expired: list[tuple[Any, ...]] = field(default_factory=list)

    def admits(self, service_id: str, owner_id: str) -> bool:
        if self.workflows[service_id] >= self.workflow_limit:
            return False
        return self.owner_limit is None or self.owners[owner_id] < self.owner_limit

    def take(self, service_id: str, owner_id: str) -> None:
        self.workflows[service_id] += 1
        self.owners[owner_id] += 1

    def full_workflows(self) -> list[str]:
        return [name for name, count in self.workflows.items() if count >= self.workflow_limit]

    def full_owners(self) -> list[str]:
        limit = self.owner_limit
        return [] if limit is None else [o for o, n in self.owners.items() if n >= limit]


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
        per_owner_limit: int | None = None,
        claim_window: int = 64,
    ) -> None:
        self._db = database
        self._clock = clock
        self._lease = timedelta(seconds=lease_seconds)
        self._max_attempts = max_attempts
        self._per_workflow_limit = per_workflow_limit
        self._per_owner_limit = per_owner_limit
        self._window = claim_window

    # ---- workers --------------------------------------------------------------------------

    async def claim(
        self, worker_id: str, limit: int, busy: Collection[str] = ()
    ) -> list[RunRecord]:
        """Lease up to ``limit`` runnable runs, fairly, honouring the concurrency limits.

        Limits (DESIGN §1 step 2): ``per_workflow_limit`` running runs per workflow,
        ``per_owner_limit`` per owner, and one running run per ``serial_key`` (one chat, one
        queued schedule), taken in arrival order: a run waits while an earlier run with its key
        is unfinished. Order (README
        "Fair claiming"): runs whose worker stopped first, then schedules and conversations,
        then API runs, each oldest first; an owner at its limit is passed over, so one owner's
        burst never holds another owner's run back for longer than a worker takes to free up.
        On PostgreSQL, claims are serialised cluster-wide by a transaction-level advisory lock,
        so two nodes cannot both pass a limit check on runs the other one is claiming.

        ``busy``: the runs ``worker_id`` is executing still. Their leases may have expired (the
        renewals failed) and another worker may take them over; this one never starts them a
        second time beside the first, and counts them as running.
        """
        claimed, _ = await self.claim_more(worker_id, limit, busy)
        return claimed

    async def claim_more(
        self, worker_id: str, limit: int, busy: Collection[str] = ()
    ) -> tuple[list[RunRecord], bool]:
        """``claim``, and whether runnable-looking runs were left (a limit, the window)."""
        if limit <= 0:
            return [], True
        async with self._db.write() as conn:
            claimed, more = await self._claim_in(conn, worker_id, limit, busy)
        claimed.sort(key=lambda record: record.queued_at or record.created_at)
        return claimed, more

    async def _claim_in(
        self, conn: AsyncConnection, worker_id: str, limit: int, busy: Collection[str]
    ) -> tuple[list[RunRecord], bool]:
        if not self._db.is_sqlite:
            await conn.execute(select(func.pg_advisory_xact_lock(CLAIM_LOCK_ID)))
        # Time is read under the locks: read before them, a run's started_at could be
        # earlier than the completed_at of the predecessor whose commit let it start.
        now = self._clock.now()
        load = await self._load(conn, now, busy)
        picked: list[str] = []
        more = await self._pick(conn, load.expired, load, picked, limit, now)
        for sources in (PRIORITY_SOURCES, (Source.API.value,)):
            # Asked again (a few times at most) when a limit this claim reached hid the rest of
            # a full window: one owner's burst must not hide the next owner's run.
            window = min(self._window, limit * 4 + 16)
            for _ in range(REFILLS):
                if len(picked) >= limit:
                    break
                owners_full = len(load.full_owners())
                query = self._candidates(now, load, sources, picked, window)
                candidates = list(await conn.execute(query))
                limited = await self._pick(conn, candidates, load, picked, limit, now)
                full = len(candidates) >= window
                more = more or limited or full
                # Only an owner newly at its limit is worth a second look: the runs it hid
                # belong to others (a workflow's limit is left to the next claim, as before).
                if not (full and len(load.full_owners()) > owners_full):
                    break
            if len(picked) >= limit:
                more = True
                break
        claimed = await self._take_leases(conn, worker_id, picked) if picked else []
        return claimed, more

    async def _pick(
        self,
        conn: AsyncConnection,
        candidates: list[Any],
        load: _Load,
        picked: list[str],
        limit: int,
        now: datetime,
    ) -> bool:
        """Add to ``picked`` the ``candidates`` that may start; whether a limit held one back."""
        limited = False
        for run_id, service_id, owner_id, status, attempts, serial_key in candidates:
            if len(picked) >= limit:
                return True
            if status == RunStatus.RUNNING and attempts >= self._max_attempts:
                await self._give_up(conn, run_id, attempts, now)
                continue
            if serial_key is not None:
                if serial_key in load.keys:
                    continue
                # Later runs of this key wait for this one, picked or not (arrival order).
                load.keys.add(serial_key)
            if not load.admits(service_id, owner_id):
                limited = True  # the next run's end may let it start
                continue
            load.take(service_id, owner_id)
            picked.append(run_id)
        return limited

    async def claim_submitted(
        self, conn: AsyncConnection, worker_id: str, new: list[tuple[str, str, str]]
    ) -> list[RunRecord]:
        """In an intake's own transaction: lease the runs it just queued that may start now.

        ``new``: (run id, workflow, owner) of runs without a serial key, queued by this
        transaction. For a caller waiting on this node (a synchronous ``/run``): the run needs
        no claim transaction of its own nor a worker's wake-up. Only runs within the workflow
        and owner limits are taken; the others stay queued for the claim loop.
        """
        if not new:
            return []
        if not self._db.is_sqlite:
            await conn.execute(select(func.pg_advisory_xact_lock(CLAIM_LOCK_ID)))
        load = await self._load(conn, self._clock.now(), ())  # under the locks, as in claim
        picked: list[str] = []
        for run_id, service_id, owner_id in new:
            if load.admits(service_id, owner_id):
                load.take(service_id, owner_id)
                picked.append(run_id)
        return await self._take_leases(conn, worker_id, picked) if picked else []

    async def _load(self, conn: AsyncConnection, now: datetime, busy: Collection[str]) -> _Load:
        """What runs now: per workflow, per owner, the serial keys held; the expired leases
        (but those of ``busy`` runs, which run still)."""
        alive = runs.c.lease_expires_at >= now
        running = await conn.execute(
            select(
                runs.c.id,
                runs.c.service_id,
                runs.c.owner_id,
                runs.c.status,
                runs.c.attempts,
                runs.c.serial_key,
                alive.label("alive"),
            )
            .where(runs.c.status == RunStatus.RUNNING)
            .order_by(runs.c.queued_at, runs.c.id)
        )
        load = _Load(self._per_workflow_limit, self._per_owner_limit)
        for run_id, service_id, owner_id, status, attempts, serial_key, is_alive in running:
            if is_alive or run_id in busy:
                load.take(service_id, owner_id)
                if serial_key is not None:
                    load.keys.add(serial_key)
            else:
                load.expired.append((run_id, service_id, owner_id, status, attempts, serial_key))
        return load

    def _candidates(
        self,
        now: datetime,
        load: _Load,
        sources: tuple[str, ...],
        picked: list[str],
        window: int,
    ) -> Select[Any]:
        """Queued runs from ``sources``, oldest first, leaving out the ones that must wait."""
        # Runs that must wait anyway are left out in SQL, so that a long backlog of one chat,
        # one saturated workflow or one owner cannot fill the window and hold back the rest.
        earlier = runs.alias("earlier")
        first_of_its_key = or_(
            runs.c.serial_key.is_(None),
            ~exists().where(
                earlier.c.serial_key == runs.c.serial_key,
                earlier.c.status.in_((RunStatus.QUEUED, RunStatus.RUNNING)),
                or_(
                    earlier.c.created_at < runs.c.created_at,
                    and_(earlier.c.created_at == runs.c.created_at, earlier.c.id < runs.c.id),
                ),
            ),
        )
        query = (
            select(
                runs.c.id,
                runs.c.service_id,
                runs.c.owner_id,
                runs.c.status,
                runs.c.attempts,
                runs.c.serial_key,
            )
            .where(
                runs.c.status == RunStatus.QUEUED,
                runs.c.source.in_(sources),
                first_of_its_key,
                runs.c.service_id.not_in(load.full_workflows()),
                runs.c.owner_id.not_in(load.full_owners()),
                runs.c.id.not_in(picked),
            )
            .order_by(runs.c.queued_at, runs.c.id)
            .limit(window)
        )
        if not self._db.is_sqlite:
            query = query.with_for_update(skip_locked=True, of=runs)
        return query

    async def _take_leases(
        self, conn: AsyncConnection, worker_id: str, picked: list[str]
    ) -> list[RunRecord]:
        # After the query that saw the predecessors finished (on PostgreSQL a completion
        # takes no claim lock: it may commit between the reading of ``now`` and that query).
        started = self._clock.now()
        result = await conn.execute(
            update(runs)
            .where(runs.c.id.in_(picked))
            .values(
                status=RunStatus.RUNNING,
                lease_owner=worker_id,
                lease_expires_at=started + self._lease,
                attempts=runs.c.attempts + 1,
                started_at=started,
            )
            .returning(*runs.c)
        )
        claimed = [run_from_row(row) for row in result.mappings()]
        for record in claimed:
            TRACE.mark(record.id, "claimed")
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
        [record], _, _ = await self.complete_many(worker_id, [Completion(run_id, outcome, reply)])
        return record is not None

    async def complete_many(
        self,
        worker_id: str,
        ends: list[Completion],
        *,
        claim: int = 0,
        busy: Collection[str] = (),
    ) -> tuple[list[RunRecord | None], list[RunRecord], bool]:
        """Record several runs' ends in one transaction (one commit for all; see ``complete``),
        then claim up to ``claim`` runs in it too: the workers freed take their next runs
        without a commit of their own.

        Returns each run as finished (``None``: the lease had passed to another worker), the
        runs claimed, and whether runs were left that a later claim may take. Each run's last
        log lines (``Completion.logs``) are inserted first: a run is never seen finished before
        its lines are stored.
        """
        records: list[RunRecord | None] = []
        claimed: list[RunRecord] = []
        more = False
        async with self._db.write() as conn:
            if claim > 0 and not self._db.is_sqlite:
                await conn.execute(select(func.pg_advisory_xact_lock(CLAIM_LOCK_ID)))
            now = self._clock.now()  # under the write lock (and the claim lock), as in claim
            lines = [row for end in ends for row in end.logs]
            if lines:
                await conn.execute(run_logs.insert(), lines)
            replies: list[dict[str, Any]] = []
            for end in ends:
                outcome = end.outcome
                result = await conn.execute(
                    _held(worker_id, end.run_id)
                    .values(
                        status=outcome.status,
                        response_status=outcome.response_status,
                        response_body=outcome.response_body,
                        response_content_type=outcome.response_content_type,
                        error=outcome.error,
                        completed_at=now,
                        duration_ms=_elapsed_ms(end.started_at, now),
                        lease_owner=None,
                        lease_expires_at=None,
                    )
                    .returning(*runs.c)
                )
                row = result.mappings().first()
                records.append(None if row is None else run_from_row(row))
                reply = end.reply(now) if row is not None and end.reply is not None else None
                if reply is not None:
                    replies.append(reply)
            if replies:
                await conn.execute(deliveries.insert(), replies)
            if claim > 0:
                claimed, more = await self._claim_in(conn, worker_id, claim, busy)
        for record in records:
            if record is not None:
                TRACE.mark(record.id, "completed")
        claimed.sort(key=lambda record: record.queued_at or record.created_at)
        return records, claimed, more

    async def expire_husks(self, ttl: float) -> list[str]:
        """Fail the API husks provisioned more than ``ttl`` s ago and never filled; their ids.

        Held runs of the channels (provisioned with a workflow) are their intakes' to fill.
        """
        now = self._clock.now()
        stale = and_(
            runs.c.status == RunStatus.PROVISIONED,
            runs.c.service_id == "",
            runs.c.created_at < now - timedelta(seconds=ttl),
        )
        async with self._db.write() as conn:
            found = await conn.execute(select(runs.c.id).where(stale))
            expired = [row.id for row in found]
            if expired:
                await conn.execute(
                    update(runs)
                    .where(runs.c.id.in_(expired), stale)
                    .values(
                        status=RunStatus.FAILED,
                        error=f"never filled within {ttl:g} s of being provisioned "
                        "(runtime.provision_ttl)",
                        completed_at=now,
                    )
                )
        return expired

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


def _elapsed_ms(start: datetime | None, end: datetime) -> int | None:
    return None if start is None else round((end - start).total_seconds() * 1000)


def _held(worker_id: str, run_id: str) -> Update:
    """An update of ``run_id`` that matches only while ``worker_id`` holds its lease."""
    return update(runs).where(
        runs.c.id == run_id, runs.c.lease_owner == worker_id, runs.c.status == RunStatus.RUNNING
    )
