"""Settings of the scheduler (``[scheduler]``) and the schedule definition, which is also the
shape of a ``[[schedules]]`` entry in the config file. Here (not in ``scheduler/``) because the
settings tree reads it; the cron, zone and target checks live in ``scheduler/``."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from core.sections import Section


class MisfirePolicy(StrEnum):
    """What happens to ticks that passed while no scheduler ran."""

    SKIP = "skip"
    RUN_ONCE = "run_once"
    RUN_ALL = "run_all"


class OverlapPolicy(StrEnum):
    """What a tick does while the schedule's previous run is unfinished."""

    ALLOW = "allow"
    SKIP = "skip"
    QUEUE = "queue"


class ScheduleSpec(BaseModel):
    """A schedule's definition: what the user writes (API, CLI, ``[[schedules]]``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str | None = Field(default=None, description="default: generated (sch_…)")
    service_id: str = Field(min_length=1, max_length=100)
    cron: str = Field(min_length=1, max_length=200)
    timezone: str = "UTC"
    inputs: dict[str, Any] = Field(default_factory=dict)
    deliver_to: str | None = Field(default=None, max_length=500)
    misfire_policy: MisfirePolicy = MisfirePolicy.SKIP
    misfire_grace: float = Field(default=3600.0, ge=0, description="seconds")
    overlap_policy: OverlapPolicy = OverlapPolicy.ALLOW
    jitter: float = Field(default=0.0, ge=0, le=3600, description="seconds, at most")
    paused: bool = False


class SchedulerSettings(Section):
    owner: str = Field(default="default", description="owner of the [[schedules]] of this file")
    standby_retry: float = Field(
        default=0.5, gt=0, description="seconds between a standby's attempts to take the lock"
    )
    poll_interval: float = Field(
        default=1.0, gt=0, description="seconds between the leader's looks for changed schedules"
    )
    on_time: float = Field(
        default=2.0,
        ge=0,
        description="ticks this late when a leader picks up a changed schedule fire normally, "
        "whatever the misfire policy",
    )
    takeover_grace: float = Field(
        default=10.0,
        ge=0,
        description="ticks this late (fire time + jitter) when a leader takes over fire once, "
        "whatever the misfire policy: the previous leader may have died before submitting them; "
        "keep it above the fail-over time",
    )
