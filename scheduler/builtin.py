"""``schedule_runs``: the built-in service through which workflows schedule workflows
(CodeWords form; see ``scheduler.actions``). Schedules belong to the calling run's owner; a run
started with a run key has that key's grants (``core.models.CallerRights``)."""

from __future__ import annotations

import json

from core.errors import SwitchboardError
from core.models import CallerRights, Invocation, Outcome
from core.ports import BuiltinService, LogSink
from scheduler.actions import perform
from scheduler.service import ScheduleService

SCHEDULE_RUNS = "schedule_runs"


def schedule_runs_service(schedules: ScheduleService) -> BuiltinService:
    async def schedule_runs(invocation: Invocation, on_log: LogSink) -> Outcome:
        try:
            body = json.loads(invocation.body or b"{}")
            if not isinstance(body, dict):
                raise SwitchboardError("the inputs must be a JSON object")
            rights = CallerRights.of_run(invocation.headers)
            answer = await perform(schedules, invocation.owner_id, body, rights)
        except (ValueError, SwitchboardError) as exc:
            detail = exc.detail if isinstance(exc, SwitchboardError) else f"invalid JSON: {exc}"
            status = exc.status if isinstance(exc, SwitchboardError) else 400
            on_log("stderr", f"schedule_runs: {detail}")
            return Outcome.from_response(
                status if status < 500 else 400,
                json.dumps({"detail": detail}).encode(),
                "application/json",
            )
        on_log("stdout", f"schedule_runs: {body.get('action', 'create')} done")
        return Outcome.from_response(200, json.dumps(answer).encode(), "application/json")

    return schedule_runs
