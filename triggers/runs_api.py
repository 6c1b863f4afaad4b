"""``/api/v1/runs``: find runs, read one with its timeline and delivery, cancel, replay, bulk.

Admin keys see every owner's runs; member keys only their own (another owner's run is 404, as
if it did not exist). Thin handlers over the ports of ``core.run_catalog``; the bodies are the
pydantic models the OpenAPI document is generated from (``triggers/openapi.py``).
"""

from __future__ import annotations

import json
from typing import Any, Literal, TypeVar

from aiohttp import web
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from core.errors import BadRequest, Conflict, Forbidden, NotFound
from core.json_input import parse_json
from core.models import RunStatus, Source
from core.operations import operation
from core.run_catalog import (
    RunCatalog,
    RunControl,
    RunDetail,
    RunFilter,
    RunItem,
    RunPage,
    RunSort,
)
from triggers.auth import Authenticator, Principal
from triggers.inbox_api import first_problem, query_parameter

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
REPEATABLE = frozenset({"status", "source"})


class RunQuery(RunFilter):
    """``GET /api/v1/runs``'s query: the filter, a page size and the cursor of the last page."""

    limit: int = Field(default=DEFAULT_LIMIT, ge=1, le=MAX_LIMIT)
    cursor: str | None = Field(default=None, max_length=1000)

    def which(self) -> RunFilter:
        return RunFilter.model_validate(self.model_dump(exclude={"limit", "cursor"}))

    @classmethod
    def parse(cls, request: web.Request) -> RunQuery:
        """The validated query; ``status`` and ``source`` may repeat, nothing else may."""
        values: dict[str, Any] = {}
        for name in request.query:
            given = request.query.getall(name)
            if name in REPEATABLE:
                values[name] = [part for value in given for part in value.split(",") if part]
            elif len(given) > 1:
                raise BadRequest(f"query parameter {name!r} is given more than once")
            else:
                values[name] = given[0]
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            raise BadRequest(first_problem(exc, query_parameter)) from None


class ReplayBody(BaseModel):
    """``POST /api/v1/runs/{id}/replay``: all optional (the original's inputs, same version)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    inputs: Any = Field(default=None, description="replaces the original body when given")
    version: Literal["same", "latest"] = "same"
    reply: bool = Field(default=False, description="send the answer to the original's target")


class BulkBody(BaseModel):
    """``POST /api/v1/runs/bulk``: an action on every run the list's filters match."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    action: Literal["cancel", "replay"]
    dry_run: bool = Field(default=False, description="only count the runs that match")
    status: list[RunStatus] = Field(default_factory=list)
    source: list[Source] = Field(default_factory=list)
    service_id: str | None = Field(default=None, max_length=100)
    owner: str | None = Field(default=None, max_length=64)
    since: AwareDatetime | None = None
    until: AwareDatetime | None = None
    q: str | None = Field(default=None, min_length=1, max_length=200)
    sort: RunSort = "-created"

    def which(self) -> RunFilter:
        return RunFilter.model_validate(self.model_dump(exclude={"action", "dry_run"}))


class BulkResult(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    action: Literal["cancel", "replay"]
    dry_run: bool
    matched: int = Field(description="runs the filters match")
    limit: int = Field(description="runs one call acts on at most (runtime.bulk_limit)")
    acted: list[str] = Field(description="ids of the runs cancelled, or of the new runs")
    skipped: list[str] = Field(default_factory=list, description="runs finished meanwhile")


class RunRoutes:
    """The handlers; :meth:`route_table` registers them as bound methods."""

    def __init__(
        self, catalog: RunCatalog, control: RunControl, auth: Authenticator, *, bulk_limit: int
    ) -> None:
        self._catalog = catalog
        self._control = control
        self._auth = auth
        self._bulk_limit = bulk_limit

    def route_table(self) -> list[web.RouteDef]:
        return [
            web.get("/api/v1/runs", self.list_runs, allow_head=False),
            web.post("/api/v1/runs/bulk", self.bulk),
            web.get("/api/v1/runs/{run_id}", self.show_run, allow_head=False),
            web.post("/api/v1/runs/{run_id}/cancel", self.cancel),
            web.post("/api/v1/runs/{run_id}/replay", self.replay),
        ]

    async def _caller(self, request: web.Request) -> Principal:
        principal = await self._auth.authenticate(request.headers.get("Authorization"))
        self._auth.refuse_one_time(principal, "the management API")
        return principal

    @operation(
        summary="List runs, newest first, by status, source, workflow, owner, time and text",
        query=RunQuery,
        answers={200: RunPage},
        tags=("runs",),
    )
    async def list_runs(self, request: web.Request) -> web.Response:
        principal = await self._caller(request)
        query = RunQuery.parse(request)
        which = _scoped(principal, query.which())
        return _answer(await self._catalog.page(which, limit=query.limit, cursor=query.cursor))

    @operation(
        summary="One run: inputs, output, timeline (queued, attempts, completed), delivery",
        answers={200: RunDetail},
        tags=("runs",),
    )
    async def show_run(self, request: web.Request) -> web.Response:
        principal = await self._caller(request)
        owner = None if principal.is_admin else principal.owner_id
        return _answer(await self._catalog.detail(request.match_info["run_id"], owner_id=owner))

    @operation(
        summary="Cancel a queued or running run (no reply is sent)",
        answers={200: RunItem},
        tags=("runs",),
    )
    async def cancel(self, request: web.Request) -> web.Response:
        principal = await self._caller(request)
        owner = None if principal.is_admin else principal.owner_id
        cancelled = await self._control.cancel(
            request.match_info["run_id"], owner_id=owner, actor=principal.caller_id
        )
        return _answer(cancelled)

    @operation(
        summary="Run a run again, with edited inputs or the latest version",
        body=ReplayBody,
        answers={201: RunItem},
        tags=("runs",),
    )
    async def replay(self, request: web.Request) -> web.Response:
        principal = await self._caller(request)
        body = await model_body(request, ReplayBody)
        owner = None if principal.is_admin else principal.owner_id
        replayed = await self._control.replay(
            request.match_info["run_id"],
            owner_id=owner,
            actor=principal.caller_id,
            inputs=_inputs_text(body),
            version=body.version,
            reply=body.reply,
        )
        return _answer(replayed, status=201)

    @operation(
        summary="Cancel or replay every run the filters match (dry_run: count them)",
        body=BulkBody,
        answers={200: BulkResult},
        tags=("runs",),
    )
    async def bulk(self, request: web.Request) -> web.Response:
        principal = await self._caller(request)
        body = await model_body(request, BulkBody)
        which = _scoped(principal, body.which())
        matched = await self._catalog.count(which)
        acted: list[str] = []
        skipped: list[str] = []
        if not body.dry_run:
            owner = None if principal.is_admin else principal.owner_id
            for run_id in await self._catalog.ids(which, limit=self._bulk_limit):
                if body.action == "cancel":
                    try:
                        await self._control.cancel(
                            run_id, owner_id=owner, actor=principal.caller_id
                        )
                    except (Conflict, NotFound):  # finished (or removed) since it was listed
                        skipped.append(run_id)
                        continue
                    acted.append(run_id)
                else:
                    new = await self._control.replay(
                        run_id,
                        owner_id=owner,
                        actor=principal.caller_id,
                        inputs=None,
                        version="same",
                        reply=False,
                    )
                    acted.append(new.id)
        result = BulkResult(
            action=body.action,
            dry_run=body.dry_run,
            matched=matched,
            limit=self._bulk_limit,
            acted=acted,
            skipped=skipped,
        )
        return _answer(result)


def _scoped(principal: Principal, which: RunFilter) -> RunFilter:
    """An admin sees what it asks for; a member only its own runs (``owner`` of another: 403)."""
    if principal.is_admin:
        return which
    if which.owner is not None and which.owner != principal.owner_id:
        raise Forbidden("filtering by another owner needs an admin key")
    return which.for_owner(principal.owner_id)


Body = TypeVar("Body", bound=BaseModel)


async def model_body(request: web.Request, model: type[Body]) -> Body:
    raw = await request.read()
    parsed = parse_json(raw, what="the request body") if raw.strip() else {}
    if not isinstance(parsed, dict):
        raise BadRequest("the request body must be a JSON object")
    try:
        return model.model_validate(parsed)
    except ValidationError as exc:
        raise BadRequest(first_problem(exc, lambda name: f"field {name!r}")) from None


def _inputs_text(body: ReplayBody) -> str | None:
    return json.dumps(body.inputs) if "inputs" in body.model_fields_set else None


def _answer(model: BaseModel, status: int = 200) -> web.Response:
    return web.json_response(text=model.model_dump_json(), status=status)
