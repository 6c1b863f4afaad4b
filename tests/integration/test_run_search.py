"""A search of the runs list reads a bounded window of runs per page and still finds every
match by following the cursor (dispatch/run_catalog.py), on SQLite and PostgreSQL."""

from __future__ import annotations

import json

import pytest

from core.clock import SystemClock
from core.db import Database
from core.models import RunRequest, SubmittedRun
from core.run_catalog import RunFilter
from dispatch.run_catalog import RunCatalogReader
from tests.integration.inbox_helpers import InboxNode

pytestmark = pytest.mark.usefixtures("default_owner")

WORDS = ["needle", "hay", "needle", "hay", "hay", "hay", "needle", "hay", "needle"]


async def made(database: Database) -> list[str]:
    """One run per word, written one after another (ids newest last)."""
    node = InboxNode(database, SystemClock())
    ids = []
    for n, word in enumerate(WORDS):
        body = json.dumps({"text": f"{word} {n}"})
        [run] = await node.intake.write(
            [RunRequest(owner_id="default", service_id="echo", body=body)]
        )
        assert isinstance(run, SubmittedRun)
        ids.append(run.id)
    return ids


async def every_page(catalog: RunCatalogReader, which: RunFilter, limit: int) -> list[list[str]]:
    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        page = await catalog.page(which, limit=limit, cursor=cursor)
        pages.append([run.id for run in page.runs])
        cursor = page.next_cursor
        if cursor is None:
            return pages


async def test_a_search_reads_a_window_per_page_and_the_cursor_finds_the_rest(
    database: Database,
) -> None:
    ids = await made(database)
    needles = [run for run, word in zip(ids, WORDS, strict=True) if word == "needle"]
    unbounded = RunCatalogReader(database)
    windowed = RunCatalogReader(database, search_window=2)
    search = RunFilter(q="needle")
    assert await every_page(unbounded, search, 10) == [needles[::-1]]
    pages = await every_page(windowed, search, 10)
    # Newest first, two runs read per page: [needle 8, hay 7], [needle 6, hay 5], [hay 4, hay 3],
    # [needle 2, hay 1], [needle 0] — an empty page still leads on, and nothing is missed.
    assert pages == [[needles[3]], [needles[2]], [], [needles[1]], [needles[0]]]
    oldest_first = await every_page(windowed, search.model_copy(update={"sort": "created"}), 10)
    assert [run for page in oldest_first for run in page] == needles
    assert await every_page(windowed, RunFilter(q="nowhere"), 10) == [[], [], [], [], []]
    # A page holds at most ``limit`` runs inside its window, and its cursor resumes after them.
    wide = RunCatalogReader(database, search_window=6)
    assert await every_page(wide, search, 1) == [
        [needles[3]],
        [needles[2]],
        [needles[1]],
        [needles[0]],
    ]
    # Without a search, the window plays no part.
    assert await every_page(windowed, RunFilter(), 10) == [ids[::-1]]
