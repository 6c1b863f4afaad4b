"""The Runs pages: the filtered list (live over server-sent events), bulk cancel / replay with
the count shown first, and a run's page (inputs, output, timeline, delivery, live log tail,
Replay with an edited payload, Cancel). Reads through ``core.run_catalog``'s ports only."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from pydantic import ValidationError

from console.render import ENVIRONMENT, Signed, back, changing, page, pretty_json, signed_in
from console.streams import STREAMS
from core.clock import parse_iso
from core.errors import BadRequest, Conflict
from core.models import LogEntry, RunStatus, Source
from core.run_catalog import RunFilter, RunItem

PAGE_SIZE = 50
POLL_SECONDS = 0.5
LOG_LINES = 2000
"""A run's page shows its last lines; the API's /logs has them all."""
SORTS = {"-created": "newest first", "created": "oldest first", "-duration": "longest first"}
FILTER_FIELDS = ("status", "source", "service_id", "owner", "q", "since", "until", "sort")


def run_filter(signed: Signed, query: Mapping[str, str], statuses: list[str]) -> RunFilter:
    """The list's filter from the form's fields (empty ones ignored), held to a member's owner."""
    fields: dict[str, Any] = {
        name: query[name].strip()
        for name in ("service_id", "owner", "q", "sort")
        if query.get(name, "").strip()
    }
    for name in ("since", "until"):  # a date input: that day's start, UTC
        if query.get(name, "").strip():
            fields[name] = f"{query[name].strip()}T00:00:00Z"
    if statuses:
        fields["status"] = tuple(statuses)
    if query.get("source"):
        fields["source"] = (query["source"],)
    try:
        which = RunFilter.model_validate(fields)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"]) or "filter"
        raise BadRequest(f"{where}: {error['msg']}") from None
    return which.for_owner(None if signed.session.is_admin else signed.session.owner_id)


def _statuses(request: web.Request) -> list[str]:
    return [value for value in request.query.getall("status", []) if value]


def _filter_query(request: web.Request) -> str:
    pairs = [(name, value) for name, value in request.query.items() if name in FILTER_FIELDS]
    return urlencode([(name, value) for name, value in pairs if value])


def _row(item: RunItem) -> str:
    return ENVIRONMENT.get_template("_run_row.html").render(run=item)


async def runs_page(request: web.Request) -> web.Response:
    signed = await signed_in(request)
    catalog = signed.deps.catalog
    which = run_filter(signed, request.query, _statuses(request))
    found = await catalog.page(which, limit=PAGE_SIZE, cursor=request.query.get("cursor"))
    filtered = _filter_query(request)
    return page(
        request,
        "runs.html",
        signed,
        runs=found.runs,
        next_url=(
            f"?{filtered}&cursor={found.next_cursor}"
            if found.next_cursor and filtered
            else f"?cursor={found.next_cursor}"
            if found.next_cursor
            else ""
        ),
        filters=request.query,
        chosen=set(_statuses(request)),
        filtered=filtered,
        statuses=[status.value for status in RunStatus],
        sources=[source.value for source in Source],
        sorts=SORTS,
        row=_row,
    )


async def runs_events(request: web.Request) -> web.StreamResponse:
    """``GET /console/runs/events?<filters>``: a ``run`` event (the row's HTML) for each new
    run of the filter's first page and each one whose status changed."""
    signed = await signed_in(request)
    catalog = signed.deps.catalog
    which = run_filter(signed, request.query, _statuses(request))
    seen: dict[str, tuple[str, int | None]] = {}
    first = True
    async with request.app[STREAMS].open(request) as stream:
        while stream.open:
            found = await catalog.page(which, limit=PAGE_SIZE, cursor=None)
            for item in reversed(found.runs):
                state = (item.status.value, item.duration_ms)
                if seen.get(item.id) != state:
                    seen[item.id] = state
                    if not first:
                        await stream.send("run", {"id": item.id, "html": _row(item)})
            if first:
                await stream.send("ready", {"runs": len(seen)})
                first = False
            await stream.pause(POLL_SECONDS)
    return stream.response


async def run_page(request: web.Request) -> web.Response:
    signed = await signed_in(request)
    run_id = request.match_info["run_id"]
    owner = None if signed.session.is_admin else signed.session.owner_id
    detail = await signed.deps.catalog.detail(run_id, owner_id=owner)
    lines: list[LogEntry] = []
    async for batch in signed.deps.gateway.follow_logs(run_id, follow=False):
        lines = [*lines, *batch][-LOG_LINES:]
    return page(
        request,
        "run.html",
        signed,
        detail=detail,
        run=detail.run,
        logs=lines,
        replay_inputs="" if detail.inputs is None else pretty_json(detail.inputs),
    )


async def run_logs(request: web.Request) -> web.StreamResponse:
    """``GET /console/runs/{id}/logs``: the run's new log lines as they are written, then a
    ``finished`` event with its status (``?after=``: lines after that time only)."""
    signed = await signed_in(request)
    run_id = request.match_info["run_id"]
    owner = None if signed.session.is_admin else signed.session.owner_id
    catalog = signed.deps.catalog
    await catalog.detail(run_id, owner_id=owner)  # NotFound for another owner's run
    after = request.query.get("after")
    since = parse_iso(after) if after else None
    async with request.app[STREAMS].open(request) as stream:
        async for batch in signed.deps.gateway.follow_logs(run_id, after_time=since):
            if not stream.open:
                break
            for entry in batch:
                await stream.send("line", entry.to_api())
        if stream.open:
            detail = await catalog.detail(run_id, owner_id=owner)
            await stream.send("finished", {"status": detail.run.status.value})
    return stream.response


async def cancel_run(request: web.Request) -> web.StreamResponse:
    signed, _ = await changing(request)
    run_id = request.match_info["run_id"]
    owner = None if signed.session.is_admin else signed.session.owner_id
    item = await signed.deps.control.cancel(run_id, owner_id=owner, actor=signed.session.key_id)
    raise back(f"/console/runs/{run_id}", f"run {run_id} is {item.status.value}")


async def replay_run(request: web.Request) -> web.StreamResponse:
    signed, form = await changing(request)
    run_id = request.match_info["run_id"]
    owner = None if signed.session.is_admin else signed.session.owner_id
    version = form.get("version", "same")
    if version not in ("same", "latest"):
        raise BadRequest("version: same or latest")
    item = await signed.deps.control.replay(
        run_id,
        owner_id=owner,
        actor=signed.session.key_id,
        inputs=form.get("inputs") or None,
        version="latest" if version == "latest" else "same",
        reply=form.get("reply") == "on",
    )
    raise back(f"/console/runs/{item.id}", f"replay of {run_id} started")


async def bulk(request: web.Request) -> web.Response:
    """``POST /console/runs/bulk``: first the count and a confirm button, then the action."""
    signed, form = await changing(request)
    action = form.get("action", "")
    if action not in ("cancel", "replay"):
        raise BadRequest("action: cancel or replay")
    post = await request.post()
    statuses = [str(value) for value in post.getall("status", []) if value]
    which = run_filter(signed, form, statuses)
    catalog, limit = signed.deps.catalog, signed.deps.bulk_limit
    matching = await catalog.count(which)
    if form.get("confirmed") != "yes":
        return page(
            request,
            "bulk.html",
            signed,
            action=action,
            matching=matching,
            limit=limit,
            fields=[(name, value) for name, value in post.items() if name not in ("csrf",)],
        )
    control, actor = signed.deps.control, signed.session.key_id
    owner = None if signed.session.is_admin else signed.session.owner_id
    done = skipped = 0
    for run_id in await catalog.ids(which, limit=limit):
        try:
            if action == "cancel":
                await control.cancel(run_id, owner_id=owner, actor=actor)
            else:
                await control.replay(
                    run_id, owner_id=owner, actor=actor, inputs=None, version="same", reply=False
                )
            done += 1
        except Conflict:
            skipped += 1  # finished meanwhile
    verb = "cancelled" if action == "cancel" else "replayed"
    raise back("/console/runs", f"{done} runs {verb}, {skipped} skipped (finished meanwhile)")
