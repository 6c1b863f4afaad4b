"""``core.run_catalog.RunCatalog`` over the runs, their logs and their deliveries.

The list is keyset-paged on (sort key, id), newest first by default; the indexes of migration
0015 serve each single filter (bench/runs_list.py measures the first page with 200,000 runs).
A search (``q``) has no text index (it would tax every run's write): it reads the bodies of at
most ``search_window`` runs per page, so a word no run holds costs a bounded page, not a scan.
A run's timeline is read from what the run already records: its queue time, the ``system`` line
each attempt's worker writes when it starts it (``run started: … (attempt N)``), its end.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, LargeBinary, Select, and_, func, literal, or_, select
from sqlalchemy.engine import Row, RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from core.clock import isoformat, parse_iso
from core.db import Database
from core.errors import BadRequest, NotFound
from core.json_input import parse_json
from core.models import RunStatus, Source
from core.run_catalog import (
    SEARCH_WINDOW,
    DeliveryView,
    RunDetail,
    RunFilter,
    RunItem,
    RunPage,
    TimelineEntry,
)
from dispatch.tables import deliveries, run_logs, runs

ITEM_COLUMNS = (
    runs.c.id,
    runs.c.owner_id,
    runs.c.service_id,
    runs.c.status,
    runs.c.source,
    runs.c.created_at,
    runs.c.started_at,
    runs.c.completed_at,
    runs.c.duration_ms,
    runs.c.attempts,
    runs.c.workflow_version,
    runs.c.error,
    runs.c.response_status,
    runs.c.reply_target,
    runs.c.replay_of,
)
ATTEMPT_LINE = re.compile(r"^run started: .* \(attempt (\d+)\)$")


class RunCatalogReader:
    """Reads runs for operators (implements ``core.run_catalog.RunCatalog``)."""

    def __init__(self, database: Database, *, search_window: int = SEARCH_WINDOW) -> None:
        self._db = database
        self._search_window = search_window

    async def page(self, which: RunFilter, *, limit: int, cursor: str | None) -> RunPage:
        sqlite = self._db.is_sqlite
        after = _after(which, cursor)
        async with self._db.read() as conn:
            edge = None
            if which.q is not None:
                edge = await _search_edge(conn, which, after, self._search_window, sqlite)
            within = after if edge is None else and_(*_up_to(which, edge), *_some(after))
            query = _ordered(which, select(*ITEM_COLUMNS), within, sqlite=sqlite)
            rows = (await conn.execute(query.limit(limit + 1))).mappings().all()
        items = [run_item(row) for row in rows[:limit]]
        if len(rows) > limit:
            next_cursor: str | None = _cursor(which, items[-1])
        elif edge is not None:  # the window is read: the next page searches on past it
            next_cursor = _cursor_at(which, edge.key, edge.id)
        else:
            next_cursor = None
        return RunPage(runs=items, next_cursor=next_cursor)

    async def count(self, which: RunFilter) -> int:
        query = select(func.count()).select_from(runs)
        query = query.where(*_conditions(which, sqlite=self._db.is_sqlite))
        async with self._db.read() as conn:
            return int(await conn.scalar(query) or 0)

    async def ids(self, which: RunFilter, *, limit: int) -> list[str]:
        query = _ordered(which, select(runs.c.id), None, sqlite=self._db.is_sqlite).limit(limit)
        async with self._db.read() as conn:
            return [str(run_id) for run_id in (await conn.execute(query)).scalars()]

    async def detail(self, run_id: str, *, owner_id: str | None) -> RunDetail:
        found = select(runs).where(runs.c.id == run_id)
        if owner_id is not None:
            found = found.where(runs.c.owner_id == owner_id)
        attempts = (
            select(run_logs.c.created_at, run_logs.c.message)
            .where(
                run_logs.c.run_id == run_id,
                run_logs.c.stream == "system",
                run_logs.c.message.startswith("run started: "),
            )
            .order_by(run_logs.c.id)
        )
        async with self._db.read() as conn:
            row = (await conn.execute(found)).mappings().first()
            if row is None:
                raise NotFound("run", run_id)
            started = (await conn.execute(attempts)).all()
            delivery = (
                (await conn.execute(select(deliveries).where(deliveries.c.run_id == run_id)))
                .mappings()
                .first()
            )
        output, output_text = _output(row["response_body"])
        return RunDetail(
            run=run_item(row),
            path=row["path"],
            method=row["method"],
            correlation_id=row["correlation_id"],
            caller_id=row["caller_id"],
            inputs=_inputs(row["request_body"]),
            output=output,
            output_text=output_text,
            response_status=row["response_status"],
            reply_target=row["reply_target"],
            timeline=_timeline(row, started),
            delivery=None if delivery is None else _delivery(delivery),
        )


def run_item(row: RowMapping) -> RunItem:
    """A row of ``ITEM_COLUMNS`` (or the whole run) as a list item."""
    target = row["reply_target"]
    return RunItem(
        id=row["id"],
        owner_id=row["owner_id"],
        service_id=row["service_id"],
        status=RunStatus(row["status"]),
        source=Source(row["source"]),
        created_at=row["created_at"],
        started_at=row["started_at"],
        completed_at=row["completed_at"],
        duration_ms=row["duration_ms"],
        attempts=row["attempts"],
        workflow_version=row["workflow_version"],
        error=row["error"],
        response_status=row["response_status"],
        reply_channel=None if not isinstance(target, dict) else str(target.get("channel")),
        replay_of=row["replay_of"],
    )


def _text_found(text: str, *, sqlite: bool) -> ColumnElement[bool]:
    """``text`` in the input (text) or the output (bytes), case-sensitive on both databases."""
    needle = literal(text.encode(), LargeBinary)
    if sqlite:  # instr() finds bytes in a BLOB as in TEXT
        return or_(
            func.instr(runs.c.request_body, text) > 0, func.instr(runs.c.response_body, needle) > 0
        )
    # PostgreSQL: strpos() for text, LIKE for bytea (its default escape is the backslash).
    pattern = "%" + re.sub(r"([\\%_])", r"\\\1", text) + "%"
    return or_(
        func.strpos(runs.c.request_body, text) > 0,
        runs.c.response_body.op("LIKE", is_comparison=True)(literal(pattern.encode(), LargeBinary)),
    )


def _conditions(which: RunFilter, *, sqlite: bool) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if which.status:
        conditions.append(runs.c.status.in_([status.value for status in which.status]))
    if which.source:
        conditions.append(runs.c.source.in_([source.value for source in which.source]))
    if which.service_id is not None:
        conditions.append(runs.c.service_id == which.service_id)
    if which.owner is not None:
        conditions.append(runs.c.owner_id == which.owner)
    if which.since is not None:
        conditions.append(runs.c.created_at >= which.since)
    if which.until is not None:
        conditions.append(runs.c.created_at < which.until)
    if which.q is not None:
        conditions.append(_text_found(which.q, sqlite=sqlite))
    if which.sort in ("duration", "-duration"):
        conditions.append(runs.c.duration_ms.is_not(None))
    return conditions


def _key_column(which: RunFilter) -> Any:
    return runs.c.duration_ms if which.sort.endswith("duration") else runs.c.created_at


def _ordered(
    which: RunFilter, query: Select[Any], after: ColumnElement[bool] | None, *, sqlite: bool
) -> Select[Any]:
    key = _key_column(which)
    conditions = _conditions(which, sqlite=sqlite)
    if after is not None:
        conditions.append(after)
    if which.sort.startswith("-"):
        order = (key.desc(), runs.c.id.desc())
    else:
        order = (key.asc(), runs.c.id.asc())
    return query.where(*conditions).order_by(*order)


def _cursor(which: RunFilter, last: RunItem) -> str:
    key = last.duration_ms if which.sort.endswith("duration") else last.created_at
    return _cursor_at(which, key, last.id)


def _cursor_at(which: RunFilter, key: datetime | int | None, run_id: str) -> str:
    shown = isoformat(key) if isinstance(key, datetime) else key
    raw = json.dumps({"sort": which.sort, "key": shown, "id": run_id}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


async def _search_edge(
    conn: AsyncConnection,
    which: RunFilter,
    after: ColumnElement[bool] | None,
    window: int,
    sqlite: bool,
) -> Row[Any] | None:
    """The last run a search's page may read: the ``window``-th of the runs the other filters
    leave past the cursor (an index walk), or ``None`` when fewer remain."""
    plain = which.model_copy(update={"q": None})
    edge = _ordered(plain, select(_key_column(which).label("key"), runs.c.id), after, sqlite=sqlite)
    found: Row[Any] | None = (await conn.execute(edge.offset(window - 1).limit(1))).first()
    return found


def _up_to(which: RunFilter, edge: Row[Any]) -> list[ColumnElement[bool]]:
    """The runs up to and including ``edge`` in ``which``'s order."""
    column = _key_column(which)
    if which.sort.startswith("-"):
        return [or_(column > edge.key, and_(column == edge.key, runs.c.id >= edge.id))]
    return [or_(column < edge.key, and_(column == edge.key, runs.c.id <= edge.id))]


def _some(condition: ColumnElement[bool] | None) -> list[ColumnElement[bool]]:
    return [] if condition is None else [condition]


def _after(which: RunFilter, cursor: str | None) -> ColumnElement[bool] | None:
    """The runs past ``cursor`` in ``which``'s order; ``BadRequest`` naming a bad cursor."""
    if cursor is None:
        return None
    try:
        decoded = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not isinstance(decoded, dict) or decoded.get("sort") != which.sort:
            raise ValueError("made for another sort order")
        run_id = str(decoded["id"])
        key: datetime | int = (
            int(decoded["key"])
            if which.sort.endswith("duration")
            else parse_iso(str(decoded["key"]))
        )
    except (ValueError, KeyError, TypeError, binascii.Error, UnicodeDecodeError) as exc:
        raise BadRequest("query parameter 'cursor' is not a cursor this list gave") from exc
    column = _key_column(which)
    if which.sort.startswith("-"):
        return or_(column < key, and_(column == key, runs.c.id < run_id))
    return or_(column > key, and_(column == key, runs.c.id > run_id))


def _timeline(row: RowMapping, started: Sequence[Any]) -> list[TimelineEntry]:
    entries = [TimelineEntry(at=row["queued_at"] or row["created_at"], kind="queued")]
    for at, message in started:
        match = ATTEMPT_LINE.match(message)
        attempt = int(match.group(1)) if match else None
        entries.append(TimelineEntry(at=at, kind="attempt", attempt=attempt))
    if row["completed_at"] is not None:
        entries.append(
            TimelineEntry(
                at=row["completed_at"],
                kind="completed",
                status=RunStatus(row["status"]),
                detail=row["error"],
            )
        )
    return entries


def _delivery(row: RowMapping) -> DeliveryView:
    return DeliveryView(
        channel=row["channel"],
        target=row["target"],
        attempts=row["attempts"],
        state=row["status"],
        last_error=row["last_error"],
        next_attempt_at=row["next_attempt_at"],
        updated_at=row["updated_at"],
    )


def _inputs(body: str | None) -> Any:
    if body is None:
        return None
    try:
        return parse_json(body, what="the request")
    except ValueError:
        return body


def _output(body: bytes | None) -> tuple[Any, str | None]:
    if body is None:
        return None, None
    try:
        return parse_json(body, what="the response"), None
    except ValueError:
        return None, body.decode("utf-8", "replace")
