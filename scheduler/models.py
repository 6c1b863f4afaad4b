"""What a schedule is: the definition a user gives (``scheduler.settings.ScheduleSpec``),
its checks, and the stored schedule with its state."""

from __future__ import annotations

import re
import secrets
from datetime import datetime
from typing import Any

from core.addresses import DestinationPolicy
from core.clock import isoformat
from scheduler.cron import Cron, InvalidSchedule, parse_cron
from scheduler.settings import MisfirePolicy, OverlapPolicy, ScheduleSpec
from scheduler.targets import parse_deliver_to

SCHEDULE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def new_schedule_id() -> str:
    return f"sch_{secrets.token_hex(8)}"


def validate_spec(spec: ScheduleSpec, destinations: DestinationPolicy) -> Cron:
    """Check what pydantic cannot (cron, zone, target, id); the parsed cron. ``destinations``:
    where a webhook target may point."""
    if spec.id is not None and not SCHEDULE_ID.match(spec.id):
        raise InvalidSchedule(f"id: {spec.id!r} must be 1-100 letters, digits, '.', '_' or '-'")
    parse_deliver_to(spec.deliver_to, destinations)
    return parse_cron(spec.cron, spec.timezone)


class Schedule(ScheduleSpec):
    """A stored schedule: definition, owner and state."""

    id: str
    owner_id: str
    revision: int
    next_fire_at: datetime | None = None
    last_fire_at: datetime | None = None
    last_run_id: str | None = None
    fired_count: int = 0
    skipped_count: int = 0
    missed_count: int = 0
    created_at: datetime
    updated_at: datetime
    from_config: bool | None = None
    """made from the config's ``[[schedules]]``; ``None``: made before that was recorded"""

    @property
    def key(self) -> str:
        """``<owner>/<id>``: names the schedule across owners (ids are unique per owner only;
        neither an owner id nor a schedule id can hold a ``/``)."""
        return f"{self.owner_id}/{self.id}"

    def parsed_cron(self) -> Cron:
        return parse_cron(self.cron, self.timezone)

    def spec(self) -> ScheduleSpec:
        return ScheduleSpec.model_validate(self.model_dump(include=set(ScheduleSpec.model_fields)))

    def to_api(self) -> dict[str, Any]:
        body = self.model_dump(mode="json")
        for name in ("next_fire_at", "last_fire_at", "created_at", "updated_at"):
            body[name] = isoformat(getattr(self, name))
        body.pop("revision")
        return body


__all__ = ["MisfirePolicy", "OverlapPolicy", "Schedule", "ScheduleSpec", "validate_spec"]
