"""``core.run_catalog.RunCatalog`` over the runs, their logs and their deliveries.

The list is keyset-paged on (sort key, id), newest first by default; the indexes of migration
0014 serve each single filter (bench/runs_list.py measures the first page with 200,000 runs).
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
from sqlalchemy.engine import RowMapping

from core.clock import isoformat, parse_iso
from core.db import Database
from core.errors import BadRequest, NotFound
from core.json_input import parse_json
from core.models import RunStatus, Source
from core.run_catalog import DeliveryView, RunDetail, RunFilter, RunItem, RunPage, TimelineEntry
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
    runs.c.reply_target,
    runs.c.replay_of,
)
ATTEMPT_LINE = re.compile(r"^run started: .* \(attempt (\d+)\)$")


class RunCatalogReader:
    """Reads runs for operators (implements ``core.run_catalog.RunCatalog``)."""

    def __init__(self, database: Database) -> None:
        self._db = database

    async def page(self, which: RunFilter, *, limit: int, cursor: str | None) -> RunPage:
        query = _ordered(
            which, select(*ITEM_COLUMNS), _after(which, cursor), sqlite=self._db.is_sqlite
        ).limit(limit + 1)
        async with self._db.read() as conn:
            rows = (await conn.execute(query)).mappings().all()
        items = [run_item(row) for row in rows[:limit]]
        more = len(rows) > limit
        return RunPage(runs=items, next_cursor=_cursor(which, items[-1]) if more else None)

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
    key: Any = last.duration_ms if which.sort.endswith("duration") else isoformat(last.created_at)
    raw = json.dumps({"sort": which.sort, "key": key, "id": last.id}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


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
