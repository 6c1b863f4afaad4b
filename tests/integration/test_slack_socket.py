"""The ``slack:socket`` trigger: Slack Socket Mode through a fake Socket Mode end on loopback.

The server opens the WebSocket itself (``apps.connections.open`` on the fake Web API); the fake
sends envelopes, redeliveries, ``disconnect`` and dropped connections and records the acks.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any

import httpx
from sqlalchemy import func, select

from dispatch.tables import runs
from tests.conftest import Live, LiveFactory
from tests.fakes.slack_api import BOT_USER_ID, SlackApi, signed_headers

_ts = itertools.count(100)


def mention_envelope(text: str, *, event_id: str, channel: str = "C1") -> dict[str, Any]:
    """An Events API body with an ``app_mention`` (the ``payload`` of an ``events_api``)."""
    ts = f"1700000000.{next(_ts):06d}"
    return {
        "team_id": "T111",
        "api_app_id": "A111",
        "type": "event_callback",
        "event_id": event_id,
        "event_time": 1_700_000_000,
        "event": {
            "type": "app_mention",
            "user": "U42",
            "text": f"<@{BOT_USER_ID}> {text}",
            "ts": ts,
            "channel": channel,
            "event_ts": ts,
        },
        "authorizations": [{"team_id": "T111", "user_id": BOT_USER_ID, "is_bot": True}],
    }


async def start(factory: LiveFactory, fake: SlackApi, **overrides: Any) -> Live:
    """A node in Socket Mode, once its connection is up."""
    roles = overrides.pop("roles", {"web", "worker"})
    before = fake.socket.opened
    live = await factory.start(
        roles=roles, slack=fake.socket_section(**{"workflow": "echo", **overrides})
    )
    await fake.socket.wait_for(lambda: fake.socket.opened > before)
    return live


async def socket_health(live: Live) -> dict[str, Any]:
    listed = await live.services.inbox.triggers()
    [health] = [each for each in listed if each.name == "slack:socket"]
    return {"backlog": health.backlog, **health.details}


async def settled(live: Live, timeout: float = 20) -> None:
    async with asyncio.timeout(timeout):
        while True:
            if not (await socket_health(live))["backlog"]:
                return
            await asyncio.sleep(0.05)  # polling the inbox's rows: nothing to subscribe to here


async def stored_runs(live: Live) -> int:
    await settled(live)
    async with live.services.database.read() as conn:
        return int((await conn.execute(select(func.count()).select_from(runs))).scalar_one())


async def test_a_mention_gets_one_threaded_reply_and_its_redelivery_no_second_run(
    live_factory: LiveFactory, slack: SlackApi
) -> None:
    live = await start(live_factory, slack)
    payload = mention_envelope("over the socket", event_id="EvS1")
    first = await slack.socket.send("events_api", payload)
    await slack.socket.wait_for(lambda: first in slack.socket.acks)
    assert slack.socket.acks[first] == {"envelope_id": first}
    await slack.wait_for(lambda: slack.posts)
    [post] = slack.posts
    assert post.args["channel"] == "C1"
    assert post.args["thread_ts"] == payload["event"]["ts"]
    assert post.args["text"] == "over the socket"

    again = await slack.socket.redeliver(first)
    await slack.socket.wait_for(lambda: again in slack.socket.acks)
    assert slack.socket.sent[again]["retry_attempt"] == 1
    assert await stored_runs(live) == 1 and len(slack.posts) == 1

    health = await socket_health(live)
    assert health["connected"] is True and health["connections"] == 1
    assert health["connected_since"] is not None and health["last_event_at"] is not None
    names = [each.name for each in await live.services.inbox.triggers()]
    assert "slack:socket" in names and "slack" not in names
    async with httpx.AsyncClient() as http:  # Socket Mode turns the HTTP event routes off
        assert (await http.post(f"{live.url}/slack/events", content=b"{}")).status_code == 404


async def test_a_slash_command_is_acked_with_the_text_in_the_ack_payload(
    live_factory: LiveFactory, slack: SlackApi
) -> None:
    routes = [{"workflow": "echo", "commands": ["/ask"]}]
    await start(live_factory, slack, workflow=None, routes=routes)
    command = {
        "team_id": "T111",
        "channel_id": "C1",
        "user_id": "U42",
        "command": "/ask",
        "text": "what now",
        "response_url": slack.response_url("sock1"),
        "trigger_id": "987.654",
    }
    envelope = await slack.socket.send("slash_commands", command)
    other = {**command, "command": "/nope", "trigger_id": "9.8"}
    unknown = await slack.socket.send("slash_commands", other)
    await slack.socket.wait_for(lambda: {envelope, unknown} <= slack.socket.acks.keys())
    assert slack.socket.acks[envelope]["payload"] == {"text": "Working on it…"}
    assert slack.socket.acks[unknown]["payload"] == {"text": "No workflow answers /nope here."}
    await slack.wait_for(lambda: slack.responses)
    [answer] = slack.responses
    assert answer["text"] == "what now" and answer["response_type"] == "ephemeral"


async def test_two_nodes_with_sockets_make_one_run_per_event(
    live_factory: LiveFactory, slack: SlackApi
) -> None:
    first = await start(live_factory, slack)
    await start(live_factory, slack)
    await slack.socket.wait_for(lambda: len(slack.socket.links) == 2)
    sent = [
        await slack.socket.send("events_api", mention_envelope(f"m{n}", event_id=f"EvT{n}"))
        for n in range(6)
    ]
    # Slack redelivers one un-acked event to the other node: still one run.
    [one, other] = slack.socket.links
    assert len(one.received) == len(other.received) == 3
    again = await slack.socket.redeliver(one.received[0], link=other)
    await slack.socket.wait_for(lambda: {*sent, again} <= slack.socket.acks.keys())
    await slack.wait_for(lambda: len(slack.posts) >= 6)
    assert await stored_runs(first) == 6
    assert sorted(post.args["text"] for post in slack.posts) == [f"m{n}" for n in range(6)]


async def test_an_event_delivered_over_http_and_the_socket_runs_once(
    live_factory: LiveFactory, slack: SlackApi
) -> None:
    secret = "socket-and-http"
    live = await start(live_factory, slack, signing_secret=secret, http_events=True)
    payload = mention_envelope("both ways", event_id="EvBOTH")
    raw = json.dumps(payload)
    async with httpx.AsyncClient() as http:
        answer = await http.post(
            f"{live.url}/slack/events", content=raw, headers=signed_headers(secret, raw)
        )
    assert answer.status_code == 200
    envelope = await slack.socket.send("events_api", payload)
    await slack.socket.wait_for(lambda: envelope in slack.socket.acks)
    await slack.wait_for(lambda: slack.posts)
    assert await stored_runs(live) == 1 and len(slack.posts) == 1
    names = {each.name for each in await live.services.inbox.triggers()}
    assert {"slack", "slack:socket"} <= names


async def test_a_suspended_socket_trigger_acks_and_holds_then_resumes_and_replays(
    live_factory: LiveFactory, slack: SlackApi
) -> None:
    live = await start(live_factory, slack)
    inbox = live.services.inbox
    await inbox.suspend("slack:socket")
    envelope = await slack.socket.send("events_api", mention_envelope("wait", event_id="EvHOLD"))
    await slack.socket.wait_for(lambda: envelope in slack.socket.acks)
    [held], _ = await inbox.events(
        trigger="slack:socket", status=None, limit=10, cursor=None, include_body=False
    )
    assert held.status == "held" and slack.posts == []
    await inbox.resume("slack:socket")
    await slack.wait_for(lambda: slack.posts)
    [run] = await inbox.replay(held.id)
    await slack.wait_for(lambda: len(slack.posts) == 2)
    assert run and [post.args["text"] for post in slack.posts] == ["wait", "wait"]
