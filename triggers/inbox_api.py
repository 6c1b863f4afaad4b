"""``/api/v1/triggers`` and ``/api/v1/inbox``: the operator's surface over :class:`InboxAdmin`.

Admin keys only (README 'Key roles'): these span every owner's events. Thin handlers: check the
key, validate the query into a model, call the port, answer the model as JSON. The bodies are
pydantic models (the OpenAPI spec of issue 13 is generated from them); the CLI prints the same.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core.clock import ApiTime
from core.errors import BadRequest
from core.inbox import EventInfo, EventStatus, InboxAdmin, TriggerHealth
from triggers.auth import Authenticator

DEFAULT_LIMIT = 50
MAX_LIMIT = 500


def query_parameter(name: str) -> str:
    return f"query parameter {name!r}"


class _Answer(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TriggerView(_Answer):
    """One trigger: its state and health (``GET /api/v1/triggers``, suspend, resume)."""

    name: str
    state: str = Field(description="active or suspended")
    last_received_at: ApiTime | None
    last_processed_at: ApiTime | None
    last_error: str | None
    last_error_at: ApiTime | None
    counts: dict[str, int] = Field(description="events by status")
    backlog: int = Field(description="events waiting: pending plus held")
    details: dict[str, Any] = Field(default_factory=dict, description="the channel's own")

    @classmethod
    def of(cls, health: TriggerHealth) -> TriggerView:
        return cls(
            name=health.name,
            state=health.state,
            last_received_at=health.last_received_at,
            last_processed_at=health.last_processed_at,
            last_error=health.last_error,
            last_error_at=health.last_error_at,
            counts=dict(health.counts),
            backlog=health.backlog,
            details=dict(health.details),
        )


class TriggerList(_Answer):
    triggers: list[TriggerView]


class Discarded(_Answer):
    trigger: str
    discarded: int = Field(description="held events marked discarded")


class EventView(_Answer):
    """One inbox event; ``headers`` and ``body`` only with ``include=body``.

    ``body`` is the stored bytes as text when they are UTF-8 (``body_encoding`` ``utf-8``: every
    HTTP provider's JSON or form body), else base64 (``base64``: a raw SMTP message in another
    charset), so a reader never has to guess.
    """

    id: str
    trigger: str
    status: EventStatus
    dedupe_key: str | None
    ordering_key: str
    received_at: ApiTime
    processed_at: ApiTime | None
    attempts: int
    error: str | None
    ignored_reason: str | None
    run_ids: list[str]
    replay_of: str | None
    headers: dict[str, str] | None = None
    body: str | None = None
    body_encoding: Literal["utf-8", "base64"] | None = None

    @classmethod
    def of(cls, info: EventInfo) -> EventView:
        body, encoding = _body_text(info.body)
        return cls(
            id=info.id,
            trigger=info.trigger,
            status=info.status,
            dedupe_key=info.dedupe_key,
            ordering_key=info.ordering_key,
            received_at=info.received_at,
            processed_at=info.processed_at,
            attempts=info.attempts,
            error=info.error,
            ignored_reason=info.ignored_reason,
            run_ids=list(info.run_ids),
            replay_of=info.replay_of,
            headers=dict(info.headers) if info.headers is not None else None,
            body=body,
            body_encoding=encoding,
        )


class EventPage(_Answer):
    events: list[EventView]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; null: last")


class Replayed(_Answer):
    event_id: str
    run_ids: list[str] = Field(description="the runs the replay made")


class InboxQuery(BaseModel):
    """``GET /api/v1/inbox``'s query (and ``switchboard inbox list``'s options)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    trigger: str | None = None
    status: EventStatus | None = None
    limit: int = Field(default=DEFAULT_LIMIT, ge=1, le=MAX_LIMIT)
    cursor: str | None = None
    include: Literal["body"] | None = None

    @classmethod
    def parse(
        cls, query: Mapping[str, object], naming: Callable[[str], str] = query_parameter
    ) -> InboxQuery:
        """The validated query; a bad parameter raises ``BadRequest`` naming it (``naming``
        says how: a query parameter here, an option in the CLI)."""
        try:
            return cls.model_validate(dict(query))
        except ValidationError as exc:
            raise BadRequest(first_problem(exc, naming)) from None


class EventQuery(BaseModel):
    """``GET /api/v1/inbox/{id}``'s query."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    include: Literal["body"] | None = None


class InboxRoutes:
    """The handlers; :meth:`route_table` registers them as bound methods."""

    def __init__(self, inbox: InboxAdmin, auth: Authenticator) -> None:
        self._inbox = inbox
        self._auth = auth

    def route_table(self) -> list[web.RouteDef]:
        # ``{name:.+}``: later trigger names may hold a '/' (``email:imap:<mailbox>``).
        return [
            web.get("/api/v1/triggers", self.list_triggers),
            web.post("/api/v1/triggers/{name:.+}/suspend", self.suspend),
            web.post("/api/v1/triggers/{name:.+}/resume", self.resume),
            web.post("/api/v1/triggers/{name:.+}/discard", self.discard),
            web.get("/api/v1/inbox", self.list_events),
            web.get("/api/v1/inbox/{event_id}", self.show_event),
            web.post("/api/v1/inbox/{event_id}/replay", self.replay),
        ]

    async def _admin(self, request: web.Request, what: str) -> None:
        principal = await self._auth.authenticate(request.headers.get("Authorization"))
        principal.require_admin(what)

    async def list_triggers(self, request: web.Request) -> web.Response:
        await self._admin(request, "listing triggers")
        found = await self._inbox.triggers()
        return _answer(TriggerList(triggers=[TriggerView.of(health) for health in found]))

    async def suspend(self, request: web.Request) -> web.Response:
        await self._admin(request, "suspending a trigger")
        return _answer(TriggerView.of(await self._inbox.suspend(request.match_info["name"])))

    async def resume(self, request: web.Request) -> web.Response:
        await self._admin(request, "resuming a trigger")
        return _answer(TriggerView.of(await self._inbox.resume(request.match_info["name"])))

    async def discard(self, request: web.Request) -> web.Response:
        await self._admin(request, "discarding a trigger's held events")
        name = request.match_info["name"]
        return _answer(Discarded(trigger=name, discarded=await self._inbox.discard(name)))

    async def list_events(self, request: web.Request) -> web.Response:
        await self._admin(request, "listing inbox events")
        query = InboxQuery.parse(_single_values(request))
        return _answer(await list_events(self._inbox, query))

    async def show_event(self, request: web.Request) -> web.Response:
        await self._admin(request, "reading an inbox event")
        try:
            query = EventQuery.model_validate(_single_values(request))
        except ValidationError as exc:
            raise BadRequest(first_problem(exc, query_parameter)) from None
        info = await self._inbox.event(
            request.match_info["event_id"], include_body=query.include == "body"
        )
        return _answer(EventView.of(info))

    async def replay(self, request: web.Request) -> web.Response:
        await self._admin(request, "replaying an inbox event")
        event_id = request.match_info["event_id"]
        return _answer(Replayed(event_id=event_id, run_ids=await self._inbox.replay(event_id)))


async def list_events(inbox: InboxAdmin, query: InboxQuery) -> EventPage:
    """One page of events as the API answers it (the CLI's ``inbox list`` too)."""
    found, next_cursor = await inbox.events(
        trigger=query.trigger,
        status=query.status,
        limit=query.limit,
        cursor=query.cursor,
        include_body=query.include == "body",
    )
    return EventPage(events=[EventView.of(info) for info in found], next_cursor=next_cursor)


def _answer(model: BaseModel) -> web.Response:
    return web.json_response(text=model.model_dump_json())


def _single_values(request: web.Request) -> dict[str, str]:
    """The query as one value per name: a repeated parameter is refused, not half-read."""
    values: dict[str, str] = {}
    for name, value in request.query.items():
        if name in values:
            raise BadRequest(f"query parameter {name!r} is given more than once")
        values[name] = value
    return values


def first_problem(exc: ValidationError, naming: Callable[[str], str]) -> str:
    # pydantic's ``msg`` never repeats the input; ``loc`` names the parameter.
    error = exc.errors()[0]
    name = naming(".".join(str(part) for part in error["loc"]))
    if error["type"] == "extra_forbidden":
        return f"unknown {name}"
    return f"{name}: {error['msg']}"


def _body_text(body: bytes | None) -> tuple[str | None, Literal["utf-8", "base64"] | None]:
    if body is None:
        return None, None
    try:
        return body.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(body).decode("ascii"), "base64"
