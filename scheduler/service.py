"""The schedule operations every surface offers (REST, CLI, ``schedule_runs``, the config file).

Writes go to the ``schedules`` table only; the leader (on this node or another) follows them.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError

from core.addresses import DestinationPolicy
from core.clock import Clock
from core.errors import BadRequest, Conflict, NotFound
from core.ports import RunGateway
from scheduler.cron import Cron, parse_cron
from scheduler.models import Schedule, ScheduleSpec, new_schedule_id, validate_spec
from scheduler.store import ScheduleStore, TickRecord
from scheduler.ticks import tick_request

logger = logging.getLogger(__name__)

PREVIEW_LIMIT = 100


class ScheduleService:
    """Create, change, pause, resume, delete, run now, preview. ``owner_id=None``: any owner."""

    def __init__(
        self,
        store: ScheduleStore,
        gateway: RunGateway,
        clock: Clock,
        *,
        ensure_owner: Callable[[str], Awaitable[object]],
        destinations: DestinationPolicy | None = None,
    ) -> None:
        """``destinations``: where a webhook ``deliver_to`` may point (default: public
        addresses only)."""
        self.store = store
        self._destinations = destinations or DestinationPolicy()
        self._gateway = gateway
        self._clock = clock
        self._ensure_owner = ensure_owner
        self._listeners: list[Callable[[], None]] = []

    def on_change(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` after every definition change made through this object (the local
        leader wakes at once instead of at its next poll)."""
        self._listeners.append(listener)

    def _changed(self) -> None:
        for listener in self._listeners:
            listener()

    async def _next_fire(self, spec: ScheduleSpec, cron: Cron) -> datetime | None:
        return None if spec.paused else cron.next_after(self._clock.now())

    async def create(
        self,
        owner_id: str,
        spec: ScheduleSpec,
        *,
        require_service: bool = True,
        from_config: bool = False,
    ) -> Schedule:
        """A new schedule. ``require_service``: refuse a ``service_id`` not registered (yet)."""
        cron = validate_spec(spec, self._destinations)
        if require_service:
            await self._require_service(spec.service_id)
        await self._ensure_owner(owner_id)
        schedule = await self.store.insert(
            spec,
            schedule_id=spec.id or new_schedule_id(),
            owner_id=owner_id,
            now=self._clock.now(),
            next_fire_at=await self._next_fire(spec, cron),
            from_config=from_config,
        )
        self._changed()
        return schedule

    async def update(
        self, owner_id: str | None, schedule_id: str, changes: dict[str, Any]
    ) -> Schedule:
        """Change some fields of the definition (the others stay as they are)."""
        current = await self.store.get(schedule_id, owner_id)
        if "id" in changes and changes["id"] != schedule_id:
            raise BadRequest("id: a schedule's id cannot change")
        try:
            spec = ScheduleSpec.model_validate({**current.spec().model_dump(), **changes})
        except ValidationError as exc:
            raise BadRequest(_validation_detail(exc)) from exc
        return await self._replace(current, spec)

    async def _replace(
        self,
        current: Schedule,
        spec: ScheduleSpec,
        *,
        require_service: bool = True,
        from_config: bool | None = None,
    ) -> Schedule:
        cron = validate_spec(spec, self._destinations)
        if require_service and spec.service_id != current.service_id:
            await self._require_service(spec.service_id)
        schedule = await self.store.replace(
            current.id,
            current.owner_id,
            spec,
            now=self._clock.now(),
            next_fire_at=await self._next_fire(spec, cron),
            from_config=from_config,
        )
        self._changed()
        return schedule

    async def pause(self, owner_id: str | None, schedule_id: str) -> Schedule:
        return await self.update(owner_id, schedule_id, {"paused": True})

    async def resume(self, owner_id: str | None, schedule_id: str) -> Schedule:
        """Start firing again from now on (ticks that passed while paused are not made up)."""
        return await self.update(owner_id, schedule_id, {"paused": False})

    async def delete(self, owner_id: str | None, schedule_id: str) -> None:
        await self.store.delete(schedule_id, owner_id)
        self._changed()

    async def get(self, owner_id: str | None, schedule_id: str) -> Schedule:
        return await self.store.get(schedule_id, owner_id)

    async def list_schedules(self, owner_id: str | None) -> list[Schedule]:
        return await self.store.list_schedules(owner_id)

    async def history(
        self, owner_id: str | None, schedule_id: str, limit: int = 20
    ) -> list[dict[str, Any]]:
        schedule = await self.store.get(schedule_id, owner_id)
        return await self.store.history(schedule.owner_id, schedule_id, limit)

    async def run_now(self, owner_id: str | None, schedule_id: str) -> str:
        """Start one run of the schedule at once (also when paused, and whatever the overlap
        policy); its run id.

        Recorded as the schedule's latest run, which the leader's overlap ``skip`` looks at (no
        tick starts alongside it), but not counted as a fired tick: ``fired_count`` counts ticks
        of the cron expression only; manual runs are in the history (``:manual:`` ticks)."""
        schedule = await self.store.get(schedule_id, owner_id)
        now = self._clock.now()
        submitted = await self._gateway.submit(tick_request(schedule, now, manual=True))
        await self.store.record(
            [TickRecord(schedule.id, schedule.owner_id, last_run_id=submitted.id)]
        )
        return submitted.id

    def preview(
        self, cron: str, timezone: str, count: int, after: datetime | None = None
    ) -> list[datetime]:
        """The next ``count`` fire times of ``cron`` in ``timezone`` after ``after`` (now)."""
        if not 1 <= count <= PREVIEW_LIMIT:
            raise BadRequest(f"count: between 1 and {PREVIEW_LIMIT}")
        return parse_cron(cron, timezone).preview(after or self._clock.now(), count)

    async def apply_config(self, owner_id: str, specs: Iterable[ScheduleSpec]) -> list[str]:
        """Create or update the ``[[schedules]]`` of the config file, by id, as ``owner_id``
        (``scheduler.owner``); the ids changed. Other owners' schedules are never looked at: ids
        are unique per owner. An entry whose id ``owner_id`` already uses for a schedule made
        through an API (not from the config) is a clash: :class:`ConfigClash`, nothing applied."""
        entries = list(specs)
        seen: set[str] = set()
        for spec in entries:
            if spec.id is None:
                raise ConfigClash("[[schedules]]: every entry needs an id")
            if spec.id in seen:
                raise ConfigClash(f"[[schedules]]: the id {spec.id!r} is used by two entries")
            seen.add(spec.id)
        stored = {schedule.id: schedule for schedule in await self.store.list_schedules(owner_id)}
        clashes = sorted(i for i in seen if i in stored and stored[i].from_config is False)
        if clashes:
            raise ConfigClash(
                f"[[schedules]]: owner {owner_id!r} (scheduler.owner) already has schedules "
                f"{clashes} made through the API or CLI, not from this file; rename the entries "
                "or delete those schedules"
            )
        for other in await self.store.list_schedules(None):
            if other.id in seen and other.owner_id != owner_id and other.from_config is None:
                # Before ids were per owner, a tenant's schedule of this id took the entry over.
                logger.warning(
                    "schedule %s of owner %s has the id of a [[schedules]] entry and predates "
                    "per-owner ids: check it is not a copy of the config's entry",
                    other.id,
                    other.owner_id,
                )
        changed: list[str] = []
        for spec in entries:
            schedule_id = spec.id or ""
            existing = stored.get(schedule_id) or await self._create_from_config(owner_id, spec)
            if existing is None:
                changed.append(schedule_id)
            elif existing.spec() != spec or existing.from_config is None:
                await self._replace(existing, spec, require_service=False, from_config=True)
                changed.append(schedule_id)
        return changed

    async def _create_from_config(self, owner_id: str, spec: ScheduleSpec) -> Schedule | None:
        """Create ``spec``; ``None`` when created, the stored schedule when another node starting
        with the same file created it (or its owner) first and won the race."""
        schedule_id = spec.id or ""
        for attempt in (1, 2, 3):
            try:
                # The config may name a workflow that is registered after start.
                await self.create(owner_id, spec, require_service=False, from_config=True)
                return None
            except (Conflict, IntegrityError):
                logger.info("schedule %s: created by another node meanwhile", schedule_id)
            try:
                return await self.store.get(schedule_id, owner_id)
            except NotFound:
                if attempt == 3:
                    raise
                # The race was on the owner row, and the other node's schedule is not committed
                # yet: create again (its insert now conflicts, or ours wins).
        raise AssertionError("unreachable")

    async def _require_service(self, service_id: str) -> None:
        if not await self._gateway.has_service(service_id):
            raise BadRequest(f"service_id: no workflow or built-in service {service_id!r}")


class ConfigClash(BadRequest):
    """The config's ``[[schedules]]`` cannot be applied as they stand."""


def _validation_detail(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}" for error in exc.errors()
    )
