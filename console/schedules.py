"""The Schedules page: the list with next fire times and counts, the actions, the create/edit
form and its live preview (the next 10 fire times, with what DST does to each)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiohttp import web

from console.render import Signed, back, changing, page, signed_in, when
from core.errors import BadRequest, SwitchboardError
from scheduler.actions import perform
from scheduler.cron import parse_cron
from scheduler.models import MisfirePolicy, OverlapPolicy, Schedule
from scheduler.service import ScheduleService

PREVIEW_COUNT = 10
ACTIONS = ("pause", "resume", "run-now", "delete")
FORM_FIELDS = ("id", "service_id", "cron", "timezone", "inputs", "deliver_to")
FORM_CHOICES = ("misfire_policy", "overlap_policy")


@dataclass(frozen=True, slots=True)
class FireTime:
    at: datetime
    in_zone: str
    note: str | None


def preview(
    schedules: ScheduleService, cron: str, timezone: str, after: str = ""
) -> list[FireTime]:
    """The next fire times of ``cron`` in ``timezone`` after ``after`` (a date in that zone;
    default now): ``BadRequest`` naming what is wrong."""
    parsed = parse_cron(cron, timezone or "UTC")
    start = None
    if after:
        try:
            start = datetime.fromisoformat(after).replace(tzinfo=parsed.zone)
        except ValueError as exc:
            raise BadRequest(f"after: {after!r} is not a date (YYYY-MM-DD)") from exc
    times = schedules.preview(cron, timezone or "UTC", PREVIEW_COUNT, start)
    previous: datetime | None = None
    answer = []
    for fire in times:
        answer.append(
            FireTime(fire, when(fire, timezone or "UTC"), parsed.dst_note(fire, previous))
        )
        previous = fire
    return answer


def _owner(signed: Signed, form: dict[str, str]) -> str | None:
    """Whose schedule a change names: an admin acts on any owner's (the form says which)."""
    if signed.session.is_admin:
        return form.get("owner") or None
    return signed.session.owner_id


async def schedules_page(request: web.Request) -> web.Response:
    signed = await signed_in(request)
    owner = None if signed.session.is_admin else signed.session.owner_id
    found = await signed.deps.schedules.list_schedules(owner)
    return page(request, "schedules.html", signed, schedules=found)


async def preview_json(request: web.Request) -> web.Response:
    """``GET /console/schedules/preview?cron=&timezone=``: what the form's script shows."""
    signed = await signed_in(request)
    try:
        query = request.query
        times = preview(
            signed.deps.schedules,
            query.get("cron", ""),
            query.get("timezone", ""),
            query.get("after", ""),
        )
    except BadRequest as exc:
        return web.json_response({"problem": exc.detail})
    return web.json_response(
        {
            "fire_times": [
                {"at": fire.at.isoformat(), "in_zone": fire.in_zone, "note": fire.note}
                for fire in times
            ]
        }
    )


def _form_values(source: Any, schedule: Schedule | None) -> dict[str, str]:
    values: dict[str, str] = {
        "id": "",
        "service_id": "",
        "cron": "",
        "timezone": "UTC",
        "inputs": "{}",
        "deliver_to": "",
        "misfire_policy": MisfirePolicy.SKIP.value,
        "overlap_policy": OverlapPolicy.ALLOW.value,
        "after": "",
    }
    if schedule is not None:
        values.update(
            id=schedule.id,
            service_id=schedule.service_id,
            cron=schedule.cron,
            timezone=schedule.timezone,
            inputs=json.dumps(schedule.inputs, indent=2),
            deliver_to=schedule.deliver_to or "",
            misfire_policy=schedule.misfire_policy.value,
            overlap_policy=schedule.overlap_policy.value,
        )
    for name in (*FORM_FIELDS, *FORM_CHOICES, "after"):
        if name in source:
            values[name] = str(source[name])
    return values


async def schedule_form(request: web.Request) -> web.Response:
    """``GET /console/schedules/new`` and ``/console/schedules/{id}/edit`` (``?owner=``)."""
    signed = await signed_in(request)
    schedule_id = request.match_info.get("schedule_id")
    schedule, history = None, []
    if schedule_id is not None:
        owner = _owner(signed, dict(request.query))
        schedule = await signed.deps.schedules.get(owner, schedule_id)
        history = await signed.deps.schedules.history(owner, schedule_id, limit=10)
    return _render_form(request, signed, _form_values(request.query, schedule), schedule, history)


def _render_form(
    request: web.Request,
    signed: Signed,
    values: dict[str, str],
    schedule: Schedule | None,
    history: list[dict[str, Any]],
    *,
    problem: str = "",
    status: int = 200,
) -> web.Response:
    try:
        times = preview(signed.deps.schedules, values["cron"], values["timezone"], values["after"])
        preview_problem = ""
    except BadRequest as exc:
        times, preview_problem = [], exc.detail if values["cron"] else ""
    return page(
        request,
        "schedule_form.html",
        signed,
        status=status,
        values=values,
        schedule=schedule,
        history=history,
        times=times,
        preview_problem=preview_problem,
        problem=problem,
        misfire_policies=[policy.value for policy in MisfirePolicy],
        overlap_policies=[policy.value for policy in OverlapPolicy],
    )


def _definition(form: dict[str, str]) -> dict[str, Any]:
    try:
        inputs = json.loads(form.get("inputs") or "{}")
    except json.JSONDecodeError as exc:
        raise BadRequest(f"inputs: not JSON ({exc.msg} at line {exc.lineno})") from exc
    if not isinstance(inputs, dict):
        raise BadRequest("inputs: a JSON object")
    return {
        "service_id": form.get("service_id", "").strip(),
        "cron": form.get("cron", "").strip(),
        "timezone": form.get("timezone", "").strip() or "UTC",
        "inputs": inputs,
        "deliver_to": form.get("deliver_to", "").strip() or None,
        "misfire_policy": form.get("misfire_policy", MisfirePolicy.SKIP.value),
        "overlap_policy": form.get("overlap_policy", OverlapPolicy.ALLOW.value),
    }


async def save_schedule(request: web.Request) -> web.StreamResponse:
    """``POST /console/schedules`` (create) and ``/console/schedules/{id}`` (update)."""
    signed, form = await changing(request)
    schedules = signed.deps.schedules
    schedule_id = request.match_info.get("schedule_id")
    schedule = None
    try:
        definition = _definition(form)
        if schedule_id is None:
            if form.get("id", "").strip():
                definition["id"] = form["id"].strip()
            created = await perform(schedules, signed.session.owner_id, definition)
            raise back("/console/schedules", f"schedule {created['id']} created")
        owner = _owner(signed, form)
        schedule = await schedules.get(owner, schedule_id)
        await schedules.update(schedule.owner_id, schedule_id, definition)
    except SwitchboardError as exc:
        return _render_form(
            request,
            signed,
            _form_values(form, schedule),
            schedule,
            [],
            problem=exc.detail,
            status=400,
        )
    raise back("/console/schedules", f"schedule {schedule_id} saved")


async def schedule_action(request: web.Request) -> web.StreamResponse:
    signed, form = await changing(request)
    schedules = signed.deps.schedules
    schedule_id, action = request.match_info["schedule_id"], request.match_info["action"]
    if action not in ACTIONS:
        raise web.HTTPNotFound
    owner = _owner(signed, form)
    if action == "pause":
        await schedules.pause(owner, schedule_id)
        done = f"schedule {schedule_id} paused"
    elif action == "resume":
        await schedules.resume(owner, schedule_id)
        done = f"schedule {schedule_id} resumed"
    elif action == "run-now":
        done = f"schedule {schedule_id} started run {await schedules.run_now(owner, schedule_id)}"
    else:
        await schedules.delete(owner, schedule_id)
        done = f"schedule {schedule_id} deleted"
    raise back("/console/schedules", done)
