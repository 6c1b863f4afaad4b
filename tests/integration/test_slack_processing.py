"""The ``slack`` processor on inbox events (an in-memory inbox; a real database, a fake Slack)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.clock import SystemClock
from core.db import Database
from core.inbox import ArrivingEvent, EventStatus, Ignored
from core.security import Signer
from dispatch.history import RunHistoryReader
from dispatch.inbox_memory import MemoryInbox
from switchboard.migrate import upgrade
from tests.fakes.slack_api import BOT_USER_ID, SlackApi
from triggers.file_settings import FilesSettings
from triggers.files import FileStore
from triggers.slack.channel import SlackChannel, SlackDeps
from triggers.slack.edge import dedupe_key, ordering_key
from triggers.slack.settings import SlackSettings

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"


@pytest.fixture
async def channel(
    database_url: str, tmp_path: Path
) -> AsyncIterator[tuple[SlackChannel, MemoryInbox, SlackApi]]:
    database = Database(database_url)
    clock = SystemClock()
    inbox = MemoryInbox(clock=clock)
    async with SlackApi.running() as fake, httpx.AsyncClient() as http, AsyncExitStack() as stack:
        await database.start(stack)
        await upgrade(database)
        files = FileStore(
            database,
            clock,
            Signer(b"0123456789abcdef0123"),
            FilesSettings(max_size=1 << 20, upload_ttl=60, download_ttl=60),
            directory=tmp_path / "files",
            base_url="http://127.0.0.1:1",
        )
        settings = SlackSettings.model_validate(fake.slack_section(SECRET, workflow="echo"))
        deps = SlackDeps(
            database, RunHistoryReader(database), clock, http, files, inbox, "http://127.0.0.1:1", 3
        )
        slack = SlackChannel(settings, lambda: deps)
        await slack.start(stack)
        yield slack, inbox, fake


async def arrive(inbox: MemoryInbox, body: dict[str, Any]) -> None:
    """What the edge stores for ``body`` (its keys, the raw bytes)."""
    await inbox.accept(
        ArrivingEvent(
            trigger="slack",
            ordering_key=ordering_key(body),
            body=json.dumps(body).encode(),
            dedupe_key=dedupe_key(body),
            headers={"content-type": "application/json"},
        )
    )


def envelope(event_id: str, **event: Any) -> dict[str, Any]:
    inner = {
        "type": "app_mention",
        "user": "U42",
        "channel": "C1",
        "ts": "1.1",
        "text": f"<@{BOT_USER_ID}> hi",
        **event,
    }
    return {
        "type": "event_callback",
        "team_id": "T111",
        "event_id": event_id,
        "event": inner,
        "authorizations": [{"team_id": "T111", "user_id": BOT_USER_ID, "is_bot": True}],
    }


async def test_twins_make_run_requests_with_one_key_and_bots_are_ignored_with_a_reason(
    channel: tuple[SlackChannel, MemoryInbox, SlackApi],
) -> None:
    slack, inbox, fake = channel
    await arrive(inbox, envelope("EvA"))
    await arrive(inbox, envelope("EvB", type="message", channel_type="channel"))
    await arrive(inbox, envelope("EvC", ts="1.2", bot_id="BOTHER"))
    await arrive(
        inbox,
        {
            "type": "event_callback",
            "team_id": "T111",
            "event_id": "EvD",
            "event": {"type": "tokens_revoked", "tokens": {"bot": ["UB"]}},
        },
    )
    await inbox.process_pending(slack.processors)
    assert [entry.status for entry in inbox.entries] == [
        EventStatus.PROCESSED,
        EventStatus.PROCESSED,
        EventStatus.IGNORED,
        EventStatus.PROCESSED,
    ]
    first, second = inbox.run_requests()
    assert first.idempotency_key == second.idempotency_key == "slack:T111:C1:1.1"
    assert first.reply_target is not None and first.reply_target.channel == "slack"
    assert inbox.entries[2].result == Ignored("sent by a bot")
    assert len(fake.called("users.info")) == 1  # the name is cached for the twin
    assert fake.called("chat.postMessage") == []  # processing replies nothing itself
