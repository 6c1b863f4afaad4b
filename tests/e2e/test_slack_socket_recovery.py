"""A Socket Mode envelope the node stored but never acked (SIGKILLed): Slack redelivers it to the
next connection, which makes no second event: exactly one run and one reply.

The window is made real without timing: the fake Socket Mode end drops the node's acks (as if the
node had died between its commit and its ack), the inbox shows the event stored, then the node
is SIGKILLed; a node with the web role only processes nothing meanwhile.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.harness import ServerProcess, Service, bearer, wait_until
from tests.fakes.slack_api import BOT_USER_ID, SlackApi

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def write_config(service: Service, slack: SlackApi) -> Path:
    section = slack.socket_section(workflow="echo")
    lines = ["[slack]", *(f"{name} = {json.dumps(value)}" for name, value in section.items())]
    lines += ["", "[inbox]", "poll_interval = 0.2", ""]
    path = service.tmp / "switchboard.toml"
    path.write_text("\n".join(lines), encoding="utf-8")
    path.chmod(0o600)  # it holds the Slack tokens
    return path


async def inbox_events(service: Service, node: ServerProcess) -> list[dict[str, Any]]:
    """``GET /api/v1/inbox`` with the admin key (a CLI call boots the services: seconds)."""
    key = (service.data_dir / "admin.key").read_text().strip()
    async with httpx.AsyncClient(timeout=30) as http:
        answer = await http.get(f"{node.url}/api/v1/inbox", headers=bearer(key))
    answer.raise_for_status()
    events: list[dict[str, Any]] = answer.json()["events"]
    return events


async def test_an_envelope_stored_but_not_acked_runs_once_after_a_kill(
    service: Service, slack: SlackApi
) -> None:
    fake = slack.socket
    config = write_config(service, slack)
    web = await service.start_ready("--config", str(config), "--role", "web")
    await fake.wait_for(lambda: fake.links, timeout=30)
    ts = "1700000000.000200"
    event = {"type": "app_mention", "user": "U42", "ts": ts, "channel": "C1"}
    payload = {
        "team_id": "T111",
        "type": "event_callback",
        "event_id": "EvKILL",
        "event": {**event, "text": f"<@{BOT_USER_ID}> still there?", "event_ts": ts},
        "authorizations": [{"team_id": "T111", "user_id": BOT_USER_ID, "is_bot": True}],
    }
    fake.lose_acks()
    envelope = await fake.send("events_api", payload)

    async def stored() -> list[dict[str, Any]] | None:
        return await inbox_events(service, web) or None

    [held] = await wait_until(stored, 30, "the envelope to be stored")
    assert (held["trigger"], held["status"], held["dedupe_key"]) == (
        "slack:socket",
        "pending",
        "slack:EvKILL",
    )
    web.signal(signal.SIGKILL)
    assert await web.wait_exit(10) == -signal.SIGKILL
    assert fake.unacked() == [envelope] and slack.posts == []

    fake.lose_acks(False)
    node = await service.start_ready("--config", str(config))
    await fake.wait_for(lambda: fake.links, timeout=30)
    again = await fake.redeliver(envelope)
    await fake.wait_for(lambda: again in fake.acks, timeout=30)
    await slack.wait_for(lambda: slack.posts, timeout=60)

    async def processed() -> dict[str, Any] | None:
        [event] = await inbox_events(service, node)
        return event if event["status"] == "processed" else None

    done = await wait_until(processed, 30, "the inbox event to be processed")
    assert len(done["run_ids"]) == 1
    [post] = slack.posts
    assert (post.args["channel"], post.args["thread_ts"], post.args["text"]) == (
        "C1",
        ts,
        "still there?",
    )
