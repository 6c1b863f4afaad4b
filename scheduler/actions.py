"""The operations on schedules as named actions on JSON bodies: one vocabulary for the
``schedule_runs`` built-in service and the REST routes.

The CodeWords form creates: ``{"service_id": ..., "cron_expression": ..., "input_data": {...}}``.
``action`` (``create|list|get|update|pause|resume|delete|run_now|preview``) picks another
operation; ``schedule_id`` names the schedule. ``cron_expression``/``cron`` and
``input_data``/``inputs`` are synonyms.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import ValidationError

from core.clock import isoformat, parse_iso
from core.errors import BadRequest
from core.models import OWNER_RIGHTS, CallerRights, Grant
from scheduler.models import ScheduleSpec
from scheduler.service import ScheduleService
from scheduler.targets import parse_deliver_to

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


OUTBOUND_SERVICES = frozenset({"send_email", "schedule_runs"})
"""Built-in services that make the server send out (a mail; a schedule with any target)."""

_STARTS = frozenset({"update", "resume", "run_now"})
"""Actions on an existing schedule that make it run (again, or with other inputs)."""


def sends_out(spec: ScheduleSpec) -> bool:
    """Whether runs of ``spec`` make the server talk to the outside (its target, its service)."""
    channel = parse_deliver_to(spec.deliver_to).channel
    return channel not in ("none", "api") or spec.service_id in OUTBOUND_SERVICES


async def perform(
    schedules: ScheduleService,
    owner_id: str | None,
    body: dict[str, Any],
    rights: CallerRights = OWNER_RIGHTS,
) -> dict[str, Any]:
    """Run the action ``body`` names (default ``create``) as ``owner_id``; the JSON answer.

    ``rights``: a run key's grants. Without ``schedules`` it may do nothing here; without
    ``outbound`` it may not make or start a schedule whose runs send out (a ``network = "none"``
    workflow cannot have the server deliver what it chose through a schedule).
    """
    action = body.get("action", "create")
    if action not in ACTIONS:
        raise BadRequest(f"action: {action!r} is not one of {', '.join(ACTIONS)}")
    rights.require(Grant.SCHEDULES, "use schedules")
    fields = definition_fields(body)
    if action == "create":
        if owner_id is None:
            raise BadRequest("create needs an owner")
        spec = _spec(fields)
        if sends_out(spec):
            rights.require(Grant.OUTBOUND, "create a schedule that sends out")
        return (await schedules.create(owner_id, spec)).to_api()
    if action in _STARTS and not rights.allows(Grant.OUTBOUND):
        await _refuse_outbound(schedules, owner_id, action, fields, rights)
    if action == "list":
        return {"schedules": [s.to_api() for s in await schedules.list_schedules(owner_id)]}
    if action == "preview" and "id" not in fields:
        times = schedules.preview(
            str(fields.get("cron", "")),
            str(fields.get("timezone", "UTC")),
            _count(fields),
            _after(fields),
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
    times = schedules.preview(schedule.cron, schedule.timezone, _count(fields), _after(fields))
    return {"fire_times": [isoformat(t) for t in times]}


async def _refuse_outbound(
    schedules: ScheduleService,
    owner_id: str | None,
    action: str,
    fields: dict[str, Any],
    rights: CallerRights,
) -> None:
    """Refuse ``action`` when the schedule sends out, before or after an update."""
    schedule_id = fields.get("id")
    if not isinstance(schedule_id, str) or not schedule_id:
        return  # the action itself says what is missing
    current = (await schedules.get(owner_id, schedule_id)).spec()
    changes = {name: value for name, value in fields.items() if name != "id"}
    later = _spec({**current.model_dump(), **changes}) if action == "update" else current
    if sends_out(current) or sends_out(later):
        rights.require(Grant.OUTBOUND, f"{action.replace('_', '-')} a schedule that sends out")


def _after(fields: dict[str, Any]) -> datetime | None:
    """``after``: the preview starts there instead of now (what does March do?)."""
    after = fields.get("after")
    if after is None or after == "":
        return None
    try:
        return parse_iso(str(after))
    except ValueError as exc:
        raise BadRequest(f"after: not an ISO 8601 time: {after!r}") from exc


def _count(fields: dict[str, Any]) -> int:
    try:
        return int(fields.get("count", 5))
    except (TypeError, ValueError) as exc:
        raise BadRequest("count: a whole number") from exc
