"""The Slack trigger through real sockets: signed requests in, a fake Slack Web API out."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from sqlalchemy import func, select

from core.models import Outcome, RunStatus
from core.ports import NullMetrics, Sender
from core.replies import Delivery, Reply
from dispatch.outbox import Outbox, OutboxSettings
from dispatch.tables import runs
from switchboard.app import inbox_processor
from tests.conftest import Live, LiveFactory
from tests.fakes.slack_api import BOT_USER_ID, SlackApi, signed_headers
from tests.integration.deliveries import wait_for_delivery

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"


async def start(factory: LiveFactory, fake: SlackApi, **overrides: Any) -> Live:
    roles = overrides.pop("roles", {"web", "worker"})
    return await factory.start(
        roles=roles, slack=fake.slack_section(SECRET, **{"workflow": "echo", **overrides})
    )


def envelope(event: dict[str, Any], *, event_id: str = "Ev1", team: str = "T111") -> dict[str, Any]:
    return {
        "token": "legacy",
        "team_id": team,
        "api_app_id": "A111",
        "type": "event_callback",
        "event_id": event_id,
        "event_time": 1_700_000_000,
        "event": event,
        "authorizations": [{"team_id": team, "user_id": BOT_USER_ID, "is_bot": True}],
    }


def mention(
    text: str = "hello there", *, ts: str = "1700000000.000100", **extra: Any
) -> dict[str, Any]:
    return {
        "type": "app_mention",
        "user": "U42",
        "text": f"<@{BOT_USER_ID}> {text}",
        "ts": ts,
        "channel": "C1",
        "event_ts": ts,
        **extra,
    }


async def post_command(live: Live, form: dict[str, str]) -> httpx.Response:
    """A slash command, form-encoded and signed as Slack sends it."""
    raw = urlencode(form)
    headers = signed_headers(SECRET, raw, content_type="application/x-www-form-urlencoded")
    async with httpx.AsyncClient() as http:
        return await http.post(f"{live.url}/slack/commands", content=raw, headers=headers)


async def post_event(
    live: Live,
    body: dict[str, Any],
    *,
    retry: int | None = None,
    timestamp: int | None = None,
    secret: str = SECRET,
) -> httpx.Response:
    raw = json.dumps(body)
    headers = signed_headers(secret, raw, timestamp=timestamp)
    if retry is not None:
        headers["X-Slack-Retry-Num"] = str(retry)
        headers["X-Slack-Retry-Reason"] = "http_timeout"
    async with httpx.AsyncClient() as http:
        return await http.post(f"{live.url}/slack/events", content=raw, headers=headers)


def slack_sender(live: Live) -> Sender:
    """The ``slack`` channel's sender, for deliveries sent directly (as the outbox would)."""
    [sender] = [each.sender for each in live.services.channels if each.name == "slack"]
    assert sender is not None
    return sender


async def settled(live: Live, timeout: float = 20) -> None:
    """Every Slack event the inbox took is processed (made its runs), ignored or failed."""
    async with asyncio.timeout(timeout):
        while True:
            [health] = [
                each for each in await live.services.inbox.triggers() if each.name == "slack"
            ]
            if health.backlog == 0:
                return
            await asyncio.sleep(0.05)  # polling the inbox's rows: nothing to subscribe to here


@contextlib.asynccontextmanager
async def inbox_worker(live: Live) -> AsyncIterator[None]:
    """The inbox processor a worker node runs, for a web-only node (whose runs stay queued)."""
    async with contextlib.AsyncExitStack() as stack:
        await inbox_processor(live.services, owner="test-inbox").start(stack)
        yield


async def stored_runs(live: Live) -> int:
    async with live.services.database.read() as conn:
        return int((await conn.execute(select(func.count()).select_from(runs))).scalar_one())


async def run_count(live: Live) -> int:
    """The runs once the inbox has processed every event it took."""
    await settled(live)
    return await stored_runs(live)


async def test_mention_gets_one_threaded_reply_with_the_workflow_text(
    live_factory: LiveFactory, slack: SlackApi
) -> None:
    live = await start(live_factory, slack)
    response = await post_event(live, envelope(mention("**hi** & <you>")))
    assert response.status_code == 200
    await slack.wait_for(lambda: slack.posts and slack.called("reactions.remove"))
    [post] = slack.posts
    assert post.args["channel"] == "C1" and post.args["thread_ts"] == "1700000000.000100"
    assert post.args["text"] == "*hi* &amp; &lt;you&gt;"
    assert post.token == "xoxb-test"
    [added_eyes, added_done] = slack.called("reactions.add")
    assert added_eyes.args["name"] == "eyes" and added_done.args["name"] == "white_check_mark"
    assert slack.called("reactions.remove")[0].args["name"] == "eyes"
    async with live.services.database.read() as conn:
        body = (await conn.execute(select(runs.c.request_body))).scalar_one()
    inputs = json.loads(body)
    assert inputs["text"] == "**hi** & <you>"
    assert inputs["sender"] == {"id": "U42", "name": "Alice"}
    assert inputs["conversation"] == {"id": "C1", "thread_id": "1700000000.000100"}
    assert inputs["channel"] == "slack"


async def test_direct_message_gets_a_reply(live_factory: LiveFactory, slack: SlackApi) -> None:
    live = await start(live_factory, slack)
    dm = {
        "type": "message",
        "channel_type": "im",
        "channel": "D9",
        "user": "U42",
        "text": "what's up",
        "ts": "1700000001.000200",
        "event_ts": "1700000001.000200",
    }
    assert (await post_event(live, envelope(dm))).status_code == 200
    await slack.wait_for(lambda: slack.posts)
    [post] = slack.posts
    assert post.args["channel"] == "D9" and post.args["text"] == "what's up"
    assert post.args["thread_ts"] == "1700000001.000200"


async def test_one_message_as_mention_message_and_retries_makes_one_run_one_reply(
    live_factory: LiveFactory, slack: SlackApi
) -> None:
    live = await start(live_factory, slack)
    as_mention = envelope(mention(), event_id="EvA")
    as_message = envelope(
        {**mention(), "type": "message", "channel_type": "channel"}, event_id="EvB"
    )
    answers = await asyncio.gather(
        post_event(live, as_mention),
        post_event(live, as_message),
        *(post_event(live, as_mention, retry=n) for n in (1, 2, 3)),
    )
    assert [answer.status_code for answer in answers] == [200] * 5
    assert await run_count(live) == 1
    await slack.wait_for(lambda: slack.called("reactions.remove"))
    assert await run_count(live) == 1
    assert len(slack.posts) == 1


@pytest.mark.parametrize("problem", ["bad", "stale", "missing"])
async def test_bad_or_stale_signature_is_refused_and_nothing_is_stored(
    live_factory: LiveFactory, slack: SlackApi, problem: str
) -> None:
    live = await start(live_factory, slack)
    body = envelope(mention())
    if problem == "bad":
        response = await post_event(live, body, secret="not-the-secret")
    elif problem == "stale":
        response = await post_event(live, body, timestamp=int(time.time()) - 301)
    else:
        async with httpx.AsyncClient() as http:
            response = await http.post(f"{live.url}/slack/events", json=body)
    assert response.status_code == 401
    assert await run_count(live) == 0
    # Nothing on the request's behalf (the server's own auth.test at start is not one).
    assert [call.method for call in slack.calls if call.method != "auth.test"] == []


async def test_url_verification_is_answered(live_factory: LiveFactory, slack: SlackApi) -> None:
    live = await start(live_factory, slack)
    response = await post_event(live, {"type": "url_verification", "challenge": "c-123"})
    assert response.status_code == 200 and response.json() == {"challenge": "c-123"}


async def test_bot_self_edited_and_unsubscribed_events_are_acked_and_ignored(
    live_factory: LiveFactory, slack: SlackApi
) -> None:
    live = await start(live_factory, slack)
    ignored = [
        {**mention(ts="1.1"), "bot_id": "BOTHER", "user": "U77"},  # another bot
        {**mention(ts="1.2"), "user": BOT_USER_ID},  # ourselves
        {
            "type": "message",
            "subtype": "message_changed",
            "channel": "D9",
            "channel_type": "im",
            "ts": "1.3",
            "message": {"text": "edited"},
        },
        {
            "type": "message",
            "channel": "C1",
            "channel_type": "channel",
            "user": "U42",
            "text": "just chatting",
            "ts": "1.4",
        },  # a channel message that is not for us
        {"type": "reaction_added", "user": "U42", "reaction": "+1", "item": {}},
    ]
    for number, event in enumerate(ignored):
        response = await post_event(live, envelope(event, event_id=f"Ev{number}"))
        assert response.status_code == 200, event
    assert await run_count(live) == 0
    assert slack.posts == []


async def test_slash_command_is_acked_at_once_and_answers_on_response_url(
    live_factory: LiveFactory, slack: SlackApi
) -> None:
    live = await start(
        live_factory,
        slack,
        routes=[{"workflow": "echo", "commands": ["/ask"], "response_type": "in_channel"}],
    )
    form = {
        "token": "legacy",
        "team_id": "T111",
        "channel_id": "C1",
        "user_id": "U42",
        "user_name": "alice",
        "command": "/ask",
        "text": "the _question_",
        "response_url": slack.response_url("cmd1"),
        "trigger_id": "123.456",
    }
    started = time.monotonic()
    response = await post_command(live, form)
    assert time.monotonic() - started < 3
    assert response.status_code == 200 and response.text == "Working on it…"
    await slack.wait_for(lambda: slack.responses)
    [answer] = slack.responses
    assert answer["text"] == "the _question_" and answer["response_type"] == "in_channel"
    assert slack.posts == []


async def test_long_answer_is_split_into_messages_without_breaking_code(
    live_factory: LiveFactory, slack: SlackApi
) -> None:
    live = await start(live_factory, slack, message_limit=4000)
    prose = " ".join(f"word{n}" for n in range(900))  # ~7,000 characters
    code = "```\n" + "\n".join(f"line {n} = {n * n}" for n in range(200)) + "\n```"
    text = (prose + "\n\n" + code)[:10_000]
    assert len(prose + "\n\n" + code) >= 10_000 - 1
    await post_event(live, envelope(mention(text)))
    await slack.wait_for(lambda: slack.called("reactions.remove"))
    parts = [post.args["text"] for post in slack.posts]
    assert len(parts) == 3
    assert all(len(part) <= 4000 for part in parts)
    assert all(part.count("```") % 2 == 0 for part in parts)
    assert all(post.args["thread_ts"] == "1700000000.000100" for post in slack.posts)
    joined = " ".join(parts)
    assert "word0 " in joined and "word899" in joined


async def test_rate_limited_post_is_retried_after_retry_after(
    live_factory: LiveFactory, slack: SlackApi
) -> None:
    live = await start(live_factory, slack)
    slack.fail_next("chat.postMessage", status=429, retry_after=1)
    await post_event(live, envelope(mention("again")))
    await slack.wait_for(lambda: slack.posts)
    attempts = slack.called("chat.postMessage")
    assert len(attempts) == 2 and len(slack.posts) == 1
    assert attempts[1].at - attempts[0].at >= 1.0  # Retry-After: 1 honoured
    [run_id] = await _run_ids(live)
    row = await wait_for_delivery(live, run_id, "sent")
    assert row["attempts"] == 2


async def test_permanent_slack_error_is_recorded_on_the_delivery(
    live_factory: LiveFactory, slack: SlackApi
) -> None:
    live = await start(live_factory, slack)
    slack.fail_next("chat.postMessage", error="channel_not_found")
    await post_event(live, envelope(mention()))
    [run_id] = await _run_ids(live)
    row = await wait_for_delivery(live, run_id, "failed")
    assert row["attempts"] == 1 and "channel_not_found" in str(row["last_error"])


async def test_restart_between_run_and_delivery_replies_exactly_once(
    live_factory: LiveFactory, slack: SlackApi
) -> None:
    # A web-only node stores the event, its inbox processor makes the run; we complete the run
    # as a worker would and "crash" before any outbox drained; then two outboxes drain.
    live = await start(live_factory, slack, roles={"web"})
    await post_event(live, envelope(mention("once")))
    async with inbox_worker(live):
        await settled(live)
    services = live.services
    [run] = await services.queue.claim("worker-a", 1)
    assert slack.called("reactions.add") == []  # :eyes: comes from the worker, not the intake
    done = Outcome.from_response(200, b'{"text": "once"}', "application/json")
    assert await services.queue.complete(
        "worker-a", run.id, done, lambda now: services.replies.row(run, done, now)
    )
    assert slack.posts == []
    sender = slack_sender(live)
    outboxes = [
        Outbox(
            services.database, services.clock, {"slack": sender}, NullMetrics(), OutboxSettings()
        )
        for _ in range(2)
    ]
    attempted = await asyncio.gather(*(outbox.drain_once() for outbox in outboxes))
    assert sorted(attempted) == [0, 1]
    assert await outboxes[0].drain_once() == 0
    assert [post.args["text"] for post in slack.posts] == ["once"]
    record = await services.queue.get(run.id)
    assert record is not None and record.status == RunStatus.COMPLETED


async def test_failed_run_answers_one_short_line_naming_the_run(
    live_factory: LiveFactory, slack: SlackApi
) -> None:
    live = await start(live_factory, slack, workflow="fail")
    await live.register("fail")
    await post_event(live, envelope(mention("please")))
    await slack.wait_for(lambda: slack.called("reactions.remove"), timeout=60)
    [run_id] = await _run_ids(live)
    [post] = slack.posts
    assert run_id in post.args["text"] and "\n" not in post.args["text"]
    assert "boom" not in post.args["text"]
    assert [call.args["name"] for call in slack.called("reactions.add")] == ["eyes", "x"]


async def test_route_by_keyword_with_fixed_inputs(
    live_factory: LiveFactory, slack: SlackApi
) -> None:
    live = await start(
        live_factory,
        slack,
        workflow=None,
        routes=[{"workflow": "echo", "keyword": "summarize", "inputs": {"reply": "summary!"}}],
    )
    await post_event(live, envelope(mention("nothing for us", ts="2.1"), event_id="Ev1"))
    await post_event(live, envelope(mention("Summarize: this", ts="2.2"), event_id="Ev2"))
    await slack.wait_for(lambda: slack.posts)
    assert [post.args["text"] for post in slack.posts] == ["summary!"]
    assert await run_count(live) == 1


async def test_attachments_are_uploaded_and_inbound_files_get_signed_uris(
    live_factory: LiveFactory, slack: SlackApi
) -> None:
    live = await start(live_factory, slack, workflow=None, routes=[{"workflow": "echo"}])
    slack.private_files["report.txt"] = b"quarterly numbers"
    event = mention(
        "see file",
        files=[
            {
                "id": "F1",
                "name": "report.txt",
                "mimetype": "text/plain",
                "url_private_download": slack.private_url("report.txt"),
            }
        ],
    )
    await post_event(live, envelope(event))
    [run_id] = await _run_ids(live)
    record = await live.services.gateway.wait_until_finished(run_id, 10)
    assert record is not None and record.request_body is not None
    [attachment] = json.loads(record.request_body)["attachments"]
    assert attachment["filename"] == "report.txt" and attachment["size"] == 17
    async with httpx.AsyncClient() as http:
        assert (await http.get(attachment["url"])).content == b"quarterly numbers"
    await slack.wait_for(lambda: slack.called("reactions.remove"))
    assert slack.uploads == {}


async def test_reply_attachments_are_uploaded_as_files_in_the_thread(
    live_factory: LiveFactory, slack: SlackApi
) -> None:
    live = await start(live_factory, slack, roles={"web"})
    _, url = await live.services.files.store("default", "chart.png", "image/png", b"\x89PNG data")
    delivery = Delivery(
        id=1,
        run_id="req_x",
        channel="slack",
        target={"channel": "slack", "address": "C1", "thread_id": "1.5", "details": {}},
        reply=Reply(text="see the chart", attachments=(url,)),
        record={},
        attempts=1,
        progress=0,
    )
    result = await slack_sender(live).send(delivery)
    assert result.outcome == "sent" and result.progress == 2
    assert [post.args["text"] for post in slack.posts] == ["see the chart"]
    [complete] = slack.called("files.completeUploadExternal")
    assert complete.args["channel_id"] == "C1" and complete.args["thread_ts"] == "1.5"
    assert list(slack.uploads.values()) == [b"\x89PNG data"]
    # A retry after the text went out resumes with the file only.
    again = await slack_sender(live).send(delivery.model_copy(update={"progress": 1}))
    assert again.outcome == "sent" and len(slack.posts) == 1 and len(slack.uploads) == 2


async def _run_ids(live: Live) -> list[str]:
    await settled(live)
    async with live.services.database.read() as conn:
        return list((await conn.execute(select(runs.c.id).order_by(runs.c.id))).scalars())


async def test_follow_up_in_a_thread_we_are_in_is_answered_when_the_route_says_so(
    live_factory: LiveFactory, slack: SlackApi
) -> None:
    live = await start(
        live_factory, slack, workflow=None, routes=[{"workflow": "echo", "follow_threads": True}]
    )
    await post_event(live, envelope(mention("start", ts="3.1"), event_id="Ev1"))
    follow_up = {
        "type": "message",
        "channel_type": "channel",
        "channel": "C1",
        "user": "U42",
        "text": "and another thing",
        "ts": "3.2",
        "thread_ts": "3.1",
    }
    elsewhere = {**follow_up, "ts": "4.2", "thread_ts": "4.1", "text": "not our thread"}
    await post_event(live, envelope(follow_up, event_id="Ev2"))
    await post_event(live, envelope(elsewhere, event_id="Ev3"))
    await slack.wait_for(lambda: len(slack.posts) == 2)
    assert sorted(post.args["text"] for post in slack.posts) == ["and another thing", "start"]
    assert {post.args["thread_ts"] for post in slack.posts} == {"3.1"}
    assert await run_count(live) == 2


SLACK_ENVIRONMENT = {
    "SLACK_CLIENT_ID": "999.888",
    "SLACK_CLIENT_SECRET": "from-the-environment",
    "SLACK_SCOPES": "admin",
    "SLACK_USER_SCOPES": "users:read",
    "SLACK_REDIRECT_URI": "https://attacker.example/redirect",
    "SLACK_VERIFICATION_TOKEN": "legacy",
    "SLACK_BOT_TOKEN": "xoxb-from-the-environment",
    "SLACK_SIGNING_SECRET": "not-the-secret",
}


async def test_slack_environment_variables_are_never_used(
    live_factory: LiveFactory,
    slack: SlackApi,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    # bolt 1.x builds an OAuth install flow (file stores under $HOME) from SLACK_CLIENT_ID/SECRET
    # when given no OAuth settings, and takes tokens and secrets it is not given from SLACK_*.
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name, value in SLACK_ENVIRONMENT.items():
        monkeypatch.setenv(name, value)
    live = await start(live_factory, slack)
    async with httpx.AsyncClient(base_url=live.url) as http:
        assert (await http.get("/slack/install")).status_code == 404
        callback = await http.get("/slack/oauth_redirect", params={"code": "c", "state": "s"})
        assert callback.status_code == 404
        # Slack's ssl_check probe carries the legacy token; bolt's own check (with the token
        # from SLACK_VERIFICATION_TOKEN) would refuse it.
        probe = urlencode({"ssl_check": "1", "token": "legacy"})
        headers = signed_headers(SECRET, probe, content_type="application/x-www-form-urlencoded")
        response = await http.post("/slack/commands", content=probe, headers=headers)
        assert response.status_code == 200
    assert [path.name for path in home.iterdir() if path.name.startswith(".bolt")] == []
    assert (await post_event(live, envelope(mention("still here")))).status_code == 200
    await slack.wait_for(lambda: slack.called("reactions.remove"))
    assert [post.args["text"] for post in slack.posts] == ["still here"]
    assert {call.token for call in slack.calls} == {"xoxb-test"}
    assert slack.called("oauth.v2.access") == []


async def test_connection_dropped_mid_reply_resumes_after_the_parts_already_posted(
    live_factory: LiveFactory, slack: SlackApi
) -> None:
    live = await start(live_factory, slack, message_limit=200)
    paragraphs = [f"Paragraph {n}. " + "word " * 30 for n in range(3)]
    # Part 2's connection drops twice: once for us, once for slack_sdk's own reconnect retry.
    slack.fail_next("chat.postMessage", drop=True, after=1)
    slack.fail_next("chat.postMessage", drop=True)
    await post_event(live, envelope(mention("\n\n".join(paragraphs))))
    [run_id] = await _run_ids(live)
    row = await wait_for_delivery(live, run_id, "sent")
    assert row["attempts"] == 2 and row["progress"] == 3
    texts = [post.args["text"] for post in slack.posts]
    assert texts == [paragraph.strip() for paragraph in paragraphs]
    assert len(slack.called("chat.postMessage")) == 5  # 1 sent, 2 dropped, 2 sent


async def test_event_from_another_workspace_is_not_answered_with_the_single_token(
    live_factory: LiveFactory, slack: SlackApi
) -> None:
    live = await start(live_factory, slack)
    response = await post_event(live, envelope(mention(), team="TOTHER"))
    assert response.status_code == 200
    assert await run_count(live) == 0
    delivery = Delivery(
        id=1,
        run_id="req_x",
        channel="slack",
        target={"channel": "slack", "address": "C1", "details": {"team_id": "TOTHER"}},
        reply=Reply(text="not for you"),
        record={},
        attempts=1,
        progress=0,
    )
    result = await slack_sender(live).send(delivery)
    assert result.outcome == "failed" and "TOTHER" in str(result.error)
    assert slack.posts == [] and slack.called("chat.postMessage") == []
    # The token's own workspace (auth.test says T111) is still answered.
    assert (await post_event(live, envelope(mention("mine"), event_id="Ev2"))).status_code == 200
    await slack.wait_for(lambda: slack.posts)
    assert [post.args["text"] for post in slack.posts] == ["mine"]


async def test_a_slow_first_auth_test_does_not_hold_the_ack(
    live_factory: LiveFactory, slack: SlackApi
) -> None:
    # Slack's API is slow from the start: the server's own auth.test (asked at start, in the
    # background) has no answer yet when the first event arrives.
    slack.holds["auth.test"] = asyncio.Event()
    live = await start(live_factory, slack)
    started = time.monotonic()
    response = await post_event(live, envelope(mention("patience")))
    # Stored and acknowledged at once: the ack path asks Slack nothing (processing waits).
    assert response.status_code == 200 and time.monotonic() - started < 1.0
    assert await stored_runs(live) == 0
    slack.holds.pop("auth.test").set()
    await slack.wait_for(lambda: slack.posts)
    assert [post.args["text"] for post in slack.posts] == ["patience"]
    assert await run_count(live) == 1


def with_file(fake: SlackApi, **extra: Any) -> dict[str, Any]:
    fake.private_files["report.txt"] = b"quarterly numbers"
    shared = {
        "id": "F1",
        "name": "report.txt",
        "mimetype": "text/plain",
        "url_private_download": fake.private_url("report.txt"),
    }
    return mention("see file", files=[shared], **extra)


@pytest.mark.parametrize("together", [False, True], ids=["one-by-one", "together"])
async def test_twins_and_retries_copy_the_files_once(
    live_factory: LiveFactory, slack: SlackApi, together: bool
) -> None:
    live = await start(live_factory, slack, roles={"web"})
    event = with_file(slack)
    as_mention = envelope(event, event_id="EvA")
    as_message = envelope({**event, "type": "message", "channel_type": "channel"}, event_id="EvB")
    deliveries = [
        post_event(live, as_mention),
        post_event(live, as_message),
        *(post_event(live, as_mention, retry=n) for n in (1, 2)),
    ]
    if together:
        answers = await asyncio.gather(*deliveries)
    else:
        answers = [await delivery for delivery in deliveries]
    assert [answer.status_code for answer in answers] == [200] * 4
    async with inbox_worker(live):
        assert await run_count(live) == 1
    assert slack.downloads == ["report.txt"]
    assert len(slack.called("users.info")) <= 1


async def test_a_retry_another_node_took_is_not_worked_on_again(
    live_factory: LiveFactory, slack: SlackApi
) -> None:
    first = await start(live_factory, slack, roles={"web"})
    second = await start(live_factory, slack, roles={"web"})
    event = envelope(with_file(slack))
    assert (await post_event(first, event)).status_code == 200
    assert (await post_event(second, event, retry=1)).status_code == 200
    async with inbox_worker(second):
        assert await run_count(second) == 1
    assert slack.downloads == ["report.txt"]


async def test_replies_to_one_channel_are_paced(live_factory: LiveFactory, slack: SlackApi) -> None:
    live = await start(live_factory, slack, channel_interval=1)
    await post_event(live, envelope(mention("first", ts="5.1"), event_id="Ev1"))
    await post_event(live, envelope(mention("second", ts="5.2"), event_id="Ev2"))
    await slack.wait_for(lambda: len(slack.posts) == 2)
    first, second = slack.posts
    assert {first.args["text"], second.args["text"]} == {"first", "second"}
    assert second.at - first.at >= 0.95


async def test_server_error_is_retried_then_sent(
    live_factory: LiveFactory, slack: SlackApi
) -> None:
    live = await start(live_factory, slack)
    slack.fail_next("chat.postMessage", status=500, error="internal_error")
    await post_event(live, envelope(mention("eventually")))
    [run_id] = await _run_ids(live)
    row = await wait_for_delivery(live, run_id, "sent")
    assert row["attempts"] == 2
    assert len(slack.called("chat.postMessage")) == 2
    assert [post.args["text"] for post in slack.posts] == ["eventually"]


async def test_slash_command_result_is_ephemeral_by_default(
    live_factory: LiveFactory, slack: SlackApi
) -> None:
    live = await start(live_factory, slack)
    form = {
        "team_id": "T111",
        "channel_id": "C1",
        "user_id": "U42",
        "command": "/echo",
        "text": "just for me",
        "response_url": slack.response_url("cmd2"),
        "trigger_id": "123.789",
    }
    response = await post_command(live, form)
    assert response.status_code == 200
    await slack.wait_for(lambda: slack.responses)
    [answer] = slack.responses
    assert answer["text"] == "just for me" and answer["response_type"] == "ephemeral"
    assert answer["url"].endswith("/response/cmd2")
    assert slack.called("chat.postMessage") == []


async def test_channel_route_answers_only_its_channel(
    live_factory: LiveFactory, slack: SlackApi
) -> None:
    live = await start(
        live_factory,
        slack,
        workflow=None,
        routes=[{"workflow": "echo", "channels": ["C7"], "inputs": {"reply": "from the C7 route"}}],
    )
    await post_event(live, envelope(mention("elsewhere", ts="6.1"), event_id="Ev1"))
    await post_event(live, envelope(mention("here", ts="6.2", channel="C7"), event_id="Ev2"))
    await slack.wait_for(lambda: slack.called("reactions.remove"))
    [post] = slack.posts
    assert post.args["channel"] == "C7" and post.args["thread_ts"] == "6.2"
    assert post.args["text"] == "from the C7 route"
    assert await run_count(live) == 1


@pytest.mark.parametrize(
    ("reactions", "added", "removed"),
    [
        (
            {"working_reaction": "hourglass", "done_reaction": "tada"},
            ["hourglass", "tada"],
            ["hourglass"],
        ),
        ({"done_reaction": None}, ["eyes"], ["eyes"]),
        ({"working_reaction": None}, [], []),
    ],
    ids=["custom", "no-done", "disabled"],
)
async def test_reactions_can_be_changed_or_turned_off(
    live_factory: LiveFactory,
    slack: SlackApi,
    reactions: dict[str, Any],
    added: list[str],
    removed: list[str],
) -> None:
    live = await start(live_factory, slack, **reactions)
    await post_event(live, envelope(mention("react")))
    [run_id] = await _run_ids(live)
    await wait_for_delivery(live, run_id, "sent")  # the swap happens before "sent"
    assert [post.args["text"] for post in slack.posts] == ["react"]
    assert [call.args["name"] for call in slack.called("reactions.add")] == added
    assert [call.args["name"] for call in slack.called("reactions.remove")] == removed


@pytest.mark.parametrize("failure", ["permanent", "given-up"])
async def test_undeliverable_reply_swaps_eyes_for_the_failure_reaction(
    live_factory: LiveFactory, slack: SlackApi, failure: str
) -> None:
    if failure == "permanent":
        live = await start(live_factory, slack)
        slack.fail_next("chat.postMessage", error="not_in_channel")
    else:  # a transient error on the outbox's last attempt
        live = await live_factory.start(
            roles={"web", "worker"},
            slack=slack.slack_section(SECRET, workflow="echo"),
            delivery={"max_attempts": 2},
        )
        for _ in range(2):
            slack.fail_next("chat.postMessage", status=500, error="internal_error")
    await post_event(live, envelope(mention("lost")))
    [run_id] = await _run_ids(live)
    row = await wait_for_delivery(live, run_id, "failed")
    assert ("not_in_channel" if failure == "permanent" else "internal_error") in str(
        row["last_error"]
    )
    assert slack.posts == []
    assert [call.args["name"] for call in slack.called("reactions.add")] == ["eyes", "x"]
    assert [call.args["name"] for call in slack.called("reactions.remove")] == ["eyes"]
