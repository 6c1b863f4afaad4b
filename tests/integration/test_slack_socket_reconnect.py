"""The Socket Mode connection comes back: after ``disconnect``, a dropped TCP connection, missed
pongs and a refusal, with nothing lost (the socket alone, over an in-memory inbox)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from core.clock import SystemClock
from dispatch.inbox_memory import MemoryInbox
from tests.fakes.slack_api import SlackApi
from triggers.slack.settings import SlackSettings
from triggers.slack.socket import SlackSocket, SocketDeps


@dataclass
class Node:
    socket: SlackSocket
    inbox: MemoryInbox


@pytest.fixture
async def node(slack: SlackApi) -> AsyncIterator[Node]:
    settings = SlackSettings.model_validate(
        slack.socket_section(socket_ping_interval=0.4, socket_backoff_max=0.2)
    )
    inbox = MemoryInbox()
    async with AsyncExitStack() as stack:
        session = await stack.enter_async_context(aiohttp.ClientSession())
        socket = SlackSocket(settings, SocketDeps(inbox, SystemClock(), session))
        await socket.start(stack)
        await slack.socket.wait_for(lambda: slack.socket.links)
        yield Node(socket, inbox)


def event(n: int) -> dict[str, Any]:
    ts = f"1700000000.{n:06d}"
    body = {"type": "app_mention", "user": "U42", "text": f"m{n}", "ts": ts, "channel": "C1"}
    return {"team_id": "T111", "type": "event_callback", "event_id": f"EvR{n}", "event": body}


async def all_taken(slack: SlackApi) -> None:
    """Slack's part: whatever was not acked is redelivered until it is."""
    fake = slack.socket
    while fake.unacked():
        for envelope in fake.unacked():
            await fake.wait_for(lambda: fake.links)
            await fake.redeliver(envelope)
            fake.sent.pop(envelope)
        await fake.wait_for(lambda: not fake.unacked() or not fake.links, timeout=5)


def stored(node: Node) -> list[str]:
    return sorted(str(entry.event.dedupe_key) for entry in node.inbox.entries)


async def test_refresh_disconnect_and_a_dropped_connection_lose_nothing(
    node: Node, slack: SlackApi
) -> None:
    fake = slack.socket
    await fake.send("events_api", event(1))
    [first] = fake.links
    await fake.disconnect(first, "refresh_requested")
    late = await fake.send("events_api", event(2), link=first)
    await fake.wait_for(lambda: fake.opened == 2 and first not in fake.links)
    assert late in fake.acks, "the replaced connection is read and acked until it closes"
    [second] = fake.links
    await fake.send("events_api", event(3), link=second)
    fake.drop(second)
    await fake.wait_for(lambda: fake.opened == 3 and fake.links)
    await fake.send("events_api", event(4))
    await all_taken(slack)
    assert stored(node) == [f"slack:EvR{n}" for n in (1, 2, 3, 4)]
    details = node.socket.details()
    assert details["connected"] is True and details["reconnects"] == 2


async def test_missed_pongs_and_a_disabled_link_reconnect_with_backoff(
    node: Node, slack: SlackApi
) -> None:
    fake = slack.socket
    fake.answer_pings = False
    fake.drop(fake.links[0])
    await fake.wait_for(lambda: fake.opened == 2)
    fake.answer_pings = True
    # No pong within half the ping interval: the client gives that connection up.
    await fake.wait_for(lambda: fake.opened == 3, timeout=10)
    assert "connection lost" in str(node.socket.details()["last_error"])

    fake.refuse = "socket_mode_disabled"
    await fake.disconnect(fake.links[0], "link_disabled")
    await slack.wait_for(lambda: len(slack.called("apps.connections.open")) >= 6)
    details = node.socket.details()
    assert "socket_mode_disabled" in str(details["last_error"])
    fake.refuse = None
    await fake.wait_for(lambda: fake.opened == 4)
    await fake.send("events_api", event(9))
    await all_taken(slack)
    assert stored(node) == ["slack:EvR9"]
