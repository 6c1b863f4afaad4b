"""One tick of a schedule as the run request it becomes."""

from __future__ import annotations

import json
from datetime import datetime

from core.clock import isoformat
from core.models import RunRequest, Source
from scheduler.models import OverlapPolicy, Schedule
from scheduler.targets import parse_deliver_to

SCHEDULED_REQUEST_HEADER = "X-Scheduled-Request-Id"


def tick_id(schedule_id: str, fire_time: datetime, *, manual: bool = False) -> str:
    """``<schedule id>:<fire time>`` (``:manual:`` for run-now): names one tick everywhere."""
    return f"{schedule_id}:{'manual:' if manual else ''}{isoformat(fire_time)}"


def history_prefix(owner_id: str, schedule_id: str) -> str:
    """What the idempotency keys of one schedule's runs start with."""
    return f"schedule:{owner_id}/{schedule_id}:"


def tick_request(schedule: Schedule, fire_time: datetime, *, manual: bool = False) -> RunRequest:
    """The run request of one tick. Its idempotency key ``schedule:<owner>/<id>:<fire time>`` is
    unique in the runs table, so a tick submitted twice (two leaders, a retry, a catch-up after a
    hand-over) makes one run, and two owners' schedules of one id never share a run."""
    tick = tick_id(schedule.id, fire_time, manual=manual)
    return RunRequest(
        owner_id=schedule.owner_id,
        service_id=schedule.service_id,
        body=json.dumps(schedule.inputs),
        source=Source.SCHEDULE,
        reply_target=parse_deliver_to(schedule.deliver_to),
        idempotency_key=f"schedule:{schedule.owner_id}/{tick}",
        serial_key=f"schedule:{schedule.key}"
        if schedule.overlap_policy == OverlapPolicy.QUEUE
        else None,
        context={SCHEDULED_REQUEST_HEADER: tick},
    )
