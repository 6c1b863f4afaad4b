"""The Slack edge through a real aiohttp server: signed requests in, inbox events out."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from aiohttp import web

from core.db import Database
from core.ports import NullMetrics
from dispatch.inbox_memory import MemoryInbox
from switchboard.http import error_middleware
from tests.conftest import free_port
from tests.fakes.slack_api import signed_headers
from triggers.slack.edge import EdgeDeps, SlackEdge
from triggers.slack.installations import SlackInstallations, SlackOAuthStates
from triggers.slack.settings import SlackSettings

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"


class Clock:
    def __init__(self) -> None:
        self.at = datetime.now(UTC)

    def now(self) -> datetime:
        return self.at


@pytest.fixture
async def edge(tmp_path: Path) -> AsyncIterator[tuple[str, MemoryInbox, Clock]]:
    clock = Clock()
    inbox = MemoryInbox(clock=clock)
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'unused.db'}")
    settings = SlackSettings.model_validate(
        {"signing_secret": SECRET, "workflow": "echo", "command_ack": "On it"}
    )
    slack = SlackEdge(settings)
    slack.attach(
        EdgeDeps(
            inbox=inbox,
            clock=clock,
            installations=SlackInstallations(database, clock),
            oauth_states=SlackOAuthStates(database, clock),
            redirect_uri="http://127.0.0.1/slack/oauth_redirect",
        )
    )
    root = web.Application(middlewares=[error_middleware(NullMetrics())])
    root.add_subapp("/slack", slack.app())
    runner = web.AppRunner(root)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}", inbox, clock
    finally:
        await runner.cleanup()
        await database.dispose()


def envelope(event_id: str, **event: Any) -> dict[str, Any]:
    inner = {"type": "app_mention", "user": "U42", "channel": "C1", "ts": "1.1", **event}
    return {"type": "event_callback", "team_id": "T111", "event_id": event_id, "event": inner}


async def post(
    url: str,
    path: str,
    raw: str,
    *,
    timestamp: int | None = None,
    content_type: str = "application/json",
    retry: str | None = None,
) -> httpx.Response:
    headers = signed_headers(SECRET, raw, timestamp=timestamp, content_type=content_type)
    if retry is not None:
        headers["X-Slack-Retry-Num"] = retry
    async with httpx.AsyncClient() as http:
        return await http.post(f"{url}{path}", content=raw, headers=headers)


async def test_an_event_is_stored_raw_with_its_keys_then_acknowledged(
    edge: tuple[str, MemoryInbox, Clock],
) -> None:
    url, inbox, _ = edge
    raw = json.dumps(envelope("Ev1", thread_ts="0.9"))
    response = await post(url, "/slack/events", raw)
    assert response.status_code == 200
    [stored] = [entry.event for entry in inbox.entries]
    assert stored.trigger == "slack" and stored.body == raw.encode()
    assert stored.dedupe_key == "slack:Ev1"
    assert stored.ordering_key == "slack:T111:C1:0.9"  # the thread root, not the message
    assert stored.headers == {"content-type": "application/json"}


async def test_retries_are_acknowledged_and_stored_once_twins_share_the_conversation(
    edge: tuple[str, MemoryInbox, Clock],
) -> None:
    url, inbox, _ = edge
    as_mention = json.dumps(envelope("EvA"))
    as_message = json.dumps(envelope("EvB", type="message", channel_type="channel"))
    answers = [await post(url, "/slack/events", as_mention)]
    answers.append(await post(url, "/slack/events", as_message))
    answers += [
        await post(url, "/slack/events", as_mention, retry=retry) for retry in ("1", "2", "3")
    ]
    assert [answer.status_code for answer in answers] == [200] * 5
    assert [entry.event.dedupe_key for entry in inbox.entries] == ["slack:EvA", "slack:EvB"]
    assert {entry.event.ordering_key for entry in inbox.entries} == {"slack:T111:C1:1.1"}


@pytest.mark.parametrize("problem", ["bad", "stale", "missing"])
async def test_an_unsigned_or_stale_request_is_refused_and_not_stored(
    edge: tuple[str, MemoryInbox, Clock], problem: str
) -> None:
    url, inbox, clock = edge
    raw = json.dumps(envelope("Ev1"))
    async with httpx.AsyncClient() as http:
        if problem == "bad":
            headers = {**signed_headers("not-the-secret", raw)}
        elif problem == "stale":  # signed now, arriving five minutes and a second later
            headers = signed_headers(SECRET, raw, timestamp=int(clock.at.timestamp()) - 301)
        else:
            headers = {"Content-Type": "application/json"}
        response = await http.post(f"{url}/slack/events", content=raw, headers=headers)
    assert response.status_code == 401 and "X-Slack" in response.json()["detail"]
    assert inbox.entries == []


async def test_the_window_follows_the_injected_clock(
    edge: tuple[str, MemoryInbox, Clock],
) -> None:
    url, inbox, clock = edge
    signed_at = int(time.time()) - 3600  # an hour ago by the wall clock
    clock.at = datetime.fromtimestamp(signed_at + 10, UTC)
    response = await post(url, "/slack/events", json.dumps(envelope("Ev1")), timestamp=signed_at)
    assert response.status_code == 200 and len(inbox.entries) == 1


async def test_url_verification_and_ssl_check_are_answered_at_once(
    edge: tuple[str, MemoryInbox, Clock],
) -> None:
    url, inbox, _ = edge
    challenge = json.dumps({"type": "url_verification", "challenge": "c-123"})
    response = await post(url, "/slack/events", challenge)
    assert response.status_code == 200 and response.json() == {"challenge": "c-123"}
    probe = urlencode({"ssl_check": "1", "token": "legacy"})
    form = "application/x-www-form-urlencoded"
    response = await post(url, "/slack/commands", probe, content_type=form)
    assert response.status_code == 200 and response.text == ""
    assert inbox.entries == []


async def test_a_slash_command_gets_its_ack_line_and_is_stored_by_trigger_id(
    edge: tuple[str, MemoryInbox, Clock],
) -> None:
    url, inbox, _ = edge
    form = {"team_id": "T111", "channel_id": "C1", "command": "/ask", "trigger_id": "12.34"}
    raw = urlencode(form)
    kind = "application/x-www-form-urlencoded"
    first = await post(url, "/slack/commands", raw, content_type=kind)
    again = await post(url, "/slack/commands", raw, content_type=kind)
    assert (first.status_code, first.text) == (200, "On it")
    assert (again.status_code, again.text) == (200, "On it")  # a duplicate, answered alike
    [stored] = [entry.event for entry in inbox.entries]
    assert stored.dedupe_key == "slack:trigger:12.34" and stored.ordering_key == "slack:T111:C1"


async def test_a_signed_body_that_is_no_object_is_a_400_naming_it(
    edge: tuple[str, MemoryInbox, Clock],
) -> None:
    url, inbox, _ = edge
    response = await post(url, "/slack/events", "[1, 2]")
    assert response.status_code == 400 and "JSON object" in response.json()["detail"]
    assert inbox.entries == []
