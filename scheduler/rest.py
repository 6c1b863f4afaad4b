"""``/schedules``: the schedule operations over REST (API-key auth; an owner sees only their
own schedules). Thin: each handler turns the request into an action of ``scheduler.actions``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from core.errors import BadRequest
from core.json_input import parse_json
from core.models import CallerRights
from scheduler.actions import perform
from scheduler.service import ScheduleService

Authenticate = Callable[[web.Request], Awaitable[tuple[str, CallerRights]]]
"""The owner id of the request's API key and its rights (raises ``Unauthorized``)."""


class ScheduleRoutes:
    def __init__(self, schedules: ScheduleService, authenticate: Authenticate) -> None:
        self._schedules = schedules
        self._authenticate = authenticate

    def route_table(self, prefix: str = "") -> list[web.RouteDef]:
        """Every schedule route under ``prefix`` (``""`` and ``/api/v1``), bound to this object."""
        base = f"{prefix}/schedules"
        return [
            web.get(base, self.list, allow_head=False),
            web.post(base, self.create),
            web.post(f"{base}/preview", self.preview_expression),
            web.get(f"{base}/{{schedule_id}}", self.get, allow_head=False),
            web.patch(f"{base}/{{schedule_id}}", self.update),
            web.delete(f"{base}/{{schedule_id}}", self.delete),
            web.post(f"{base}/{{schedule_id}}/pause", self.pause),
            web.post(f"{base}/{{schedule_id}}/resume", self.resume),
            web.post(f"{base}/{{schedule_id}}/run-now", self.run_now),
            web.get(f"{base}/{{schedule_id}}/preview", self.preview, allow_head=False),
        ]

    async def _answer(
        self, request: web.Request, body: dict[str, Any], status: int = 200
    ) -> web.Response:
        owner_id, rights = await self._authenticate(request)
        answer = await perform(self._schedules, owner_id, body, rights)
        return web.json_response(answer, status=status)

    async def list(self, request: web.Request) -> web.Response:
        return await self._answer(request, {"action": "list"})

    async def create(self, request: web.Request) -> web.Response:
        body = await _json(request)
        return await self._answer(request, {**body, "action": "create"}, status=201)

    async def get(self, request: web.Request) -> web.Response:
        return await self._answer(request, _named(request, "get"))

    async def update(self, request: web.Request) -> web.Response:
        body = await _json(request)
        return await self._answer(request, {**body, **_named(request, "update")})

    async def delete(self, request: web.Request) -> web.Response:
        return await self._answer(request, _named(request, "delete"))

    async def pause(self, request: web.Request) -> web.Response:
        return await self._answer(request, _named(request, "pause"))

    async def resume(self, request: web.Request) -> web.Response:
        return await self._answer(request, _named(request, "resume"))

    async def run_now(self, request: web.Request) -> web.Response:
        return await self._answer(request, _named(request, "run_now"), status=202)

    async def preview(self, request: web.Request) -> web.Response:
        body = {
            **_named(request, "preview"),
            "count": request.query.get("count", "5"),
            "after": request.query.get("after"),
        }
        return await self._answer(request, body)

    async def preview_expression(self, request: web.Request) -> web.Response:
        body = await _json(request)
        return await self._answer(request, {**body, "action": "preview"})


def _named(request: web.Request, action: str) -> dict[str, Any]:
    return {"action": action, "schedule_id": request.match_info["schedule_id"]}


async def _json(request: web.Request) -> dict[str, Any]:
    body = parse_json(await request.read() or b"{}")
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    body.pop("action", None)
    return body
