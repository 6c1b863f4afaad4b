"""The operations on schedules as named actions on JSON bodies: one vocabulary for the
``schedule_runs`` built-in service and the REST routes.

The CodeWords form creates: ``{"service_id": ..., "cron_expression": ..., "input_data": {...}}``.
``action`` (``create|list|get|update|pause|resume|delete|run_now|preview``) picks another
operation; ``schedule_id`` names the schedule. ``cron_expression``/``cron`` and
``input_data``/``inputs`` are synonyms.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from core.clock import isoformat
from core.errors import BadRequest
from scheduler.models import ScheduleSpec
from scheduler.service import ScheduleService

ACTIONS = ("create", "list", "get", "update", "pause", "resume", "delete", "run_now", "preview")
_SYNONYMS = {"cron_expression": "cron", "input_data": "inputs"}


def definition_fields(body: dict[str, Any]) -> dict[str, Any]:
    """``body``'s schedule fields under their stored names (synonyms resolved)."""
    fields = {_SYNONYMS.get(name, name): value for name, value in body.items()}
    fields.pop("action", None)
    if "schedule_id" in fields:
        fields["id"] = fields.pop("schedule_id")
    return fields


def _spec(fields: dict[str, Any]) -> ScheduleSpec:
    try:
        return ScheduleSpec.model_validate(fields)
    except ValidationError as exc:
        raise BadRequest(
            "; ".join(
                f"{'.'.join(str(p) for p in error['loc']) or 'body'}: {error['msg']}"
                for error in exc.errors()
            )
        ) from exc


async def perform(
    schedules: ScheduleService, owner_id: str | None, body: dict[str, Any]
) -> dict[str, Any]:
    """Run the action ``body`` names (default ``create``) as ``owner_id``; the JSON answer."""
    action = body.get("action", "create")
    if action not in ACTIONS:
        raise BadRequest(f"action: {action!r} is not one of {', '.join(ACTIONS)}")
    fields = definition_fields(body)
    if action == "create":
        if owner_id is None:
            raise BadRequest("create needs an owner")
        return (await schedules.create(owner_id, _spec(fields))).to_api()
    if action == "list":
        return {"schedules": [s.to_api() for s in await schedules.list_schedules(owner_id)]}
    if action == "preview" and "id" not in fields:
        times = schedules.preview(
            str(fields.get("cron", "")), str(fields.get("timezone", "UTC")), _count(fields)
        )
        return {"fire_times": [isoformat(t) for t in times]}
    schedule_id = fields.pop("id", None)
    if not isinstance(schedule_id, str) or not schedule_id:
        raise BadRequest(f"schedule_id: required for action {action!r}")
    if action == "get":
        schedule = await schedules.get(owner_id, schedule_id)
        history = await schedules.history(owner_id, schedule_id)
        return {**schedule.to_api(), "recent_runs": history}
    if action == "update":
        return (await schedules.update(owner_id, schedule_id, fields)).to_api()
    if action == "pause":
        return (await schedules.pause(owner_id, schedule_id)).to_api()
    if action == "resume":
        return (await schedules.resume(owner_id, schedule_id)).to_api()
    if action == "delete":
        await schedules.delete(owner_id, schedule_id)
        return {"deleted": schedule_id}
    if action == "run_now":
        return {"request_id": await schedules.run_now(owner_id, schedule_id)}
    schedule = await schedules.get(owner_id, schedule_id)
    times = schedules.preview(schedule.cron, schedule.timezone, _count(fields))
    return {"fire_times": [isoformat(t) for t in times]}


def _count(fields: dict[str, Any]) -> int:
    try:
        return int(fields.get("count", 5))
    except (TypeError, ValueError) as exc:
        raise BadRequest("count: a whole number") from exc
