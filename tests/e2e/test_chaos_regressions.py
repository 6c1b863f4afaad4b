"""Regressions bench.chaos found (issue 15), each proved on its own, beside the harness.

A Slack reply whose sender died mid-send was posted twice: the server was killed after Slack had
the ``chat.postMessage`` and before the outbox recorded it, and the next attempt (after the lease)
posted it again. Each post now carries its delivery and part in ``metadata``, and an attempt
after an interrupted one reads the thread first.

The same held for WhatsApp: the next attempt now lists the chat's recent messages at Twilio and
takes an unrecorded one with the next part's body as that part.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import create_async_engine
from twilio.request_validator import RequestValidator

from dispatch.tables import deliveries
from tests.e2e.harness import Service, wait_until
from tests.fakes.slack_api import BOT_USER_ID, SlackApi, signed_headers
from tests.fakes.twilio_api import FakeTwilioApi, whatsapp_message_form

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SECRET = "regression-signing-secret-0123456789"


def mention(text: str) -> str:
    ts = f"{int(time.time())}.000100"
    event = {
        "type": "app_mention",
        "user": "U42",
        "user_profile": {"display_name": "Alice"},
        "text": f"<@{BOT_USER_ID}> {text}",
        "ts": ts,
        "channel": "C042",
        "event_ts": ts,
    }
    return json.dumps(
        {"team_id": "T111", "type": "event_callback", "event_id": "Ev0001", "event": event}
    )


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_slack_reply_whose_sender_was_killed_mid_send_is_posted_once(
    service: Service, database_url: str
) -> None:
    async with SlackApi.running() as slack:
        settings = {
            "SWITCHBOARD_SLACK__SIGNING_SECRET": SECRET,
            "SWITCHBOARD_SLACK__BOT_TOKEN": "xoxb-test",
            "SWITCHBOARD_SLACK__API_URL": slack.api_url,
            "SWITCHBOARD_SLACK__WORKFLOW": "echo",
            "SWITCHBOARD_SLACK__CHANNEL_INTERVAL": "0",
            "SWITCHBOARD_DELIVERY__LEASE_SECONDS": "1",
        }
        server = await service.start_ready(**settings)
        gate = asyncio.Event()
        slack.holds["chat.postMessage"] = gate
        body = mention("only once")
        async with httpx.AsyncClient() as http:
            answer = await http.post(
                f"{server.url}/slack/events", content=body, headers=signed_headers(SECRET, body)
            )
        assert answer.status_code == 200, answer.text
        await slack.wait_for(lambda: slack.held >= 1)
        server.signal(signal.SIGKILL)  # Slack has the post; our record of it never happens
        await server.wait_exit(10)
        del slack.holds["chat.postMessage"]
        gate.set()
        await slack.wait_for(lambda: len(slack.posts) == 1)

        await service.start_ready(**settings)
        engine = create_async_engine(database_url)
        try:

            async def settled() -> list[str]:
                async with engine.connect() as conn:
                    statuses = (await conn.execute(select(deliveries.c.status))).scalars()
                    return [status for status in statuses if status == "sent"]

            await wait_until(settled, 30, "the interrupted delivery to be settled")
        finally:
            await engine.dispose()
        assert [post.args["text"] for post in slack.posts] == ["only once"]


async def sent_deliveries(database_url: str) -> list[str]:
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            statuses = (await conn.execute(select(deliveries.c.status))).scalars()
            return [status for status in statuses if status == "sent"]
    finally:
        await engine.dispose()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_whatsapp_reply_whose_sender_was_killed_mid_send_is_sent_once(
    service: Service, database_url: str, twilio: FakeTwilioApi
) -> None:
    settings = {
        "SWITCHBOARD_WHATSAPP__ACCOUNT_SID": twilio.account_sid,
        "SWITCHBOARD_WHATSAPP__AUTH_TOKEN": twilio.auth_token,
        "SWITCHBOARD_WHATSAPP__API_URL": twilio.url,
        "SWITCHBOARD_WHATSAPP__WORKFLOW": "echo",
        "SWITCHBOARD_DELIVERY__LEASE_SECONDS": "1",
    }
    server = await service.start_ready(**settings)
    gate = asyncio.Event()
    twilio.hold, twilio.keep_abandoned = gate, True
    url = f"{server.url}/twilio/whatsapp"
    form = whatsapp_message_form("only once", sid="SM" + "1" * 32, user="whatsapp:+15550001")
    signature = RequestValidator(twilio.auth_token).compute_signature(url, form)
    async with httpx.AsyncClient() as http:
        answer = await http.post(url, data=form, headers={"X-Twilio-Signature": signature})
    assert answer.status_code == 200, answer.text
    await twilio.wait_held(1)
    server.signal(signal.SIGKILL)  # Twilio creates the message; our record of it never happens
    await server.wait_exit(10)
    twilio.hold = None
    gate.set()
    await twilio.wait_for(1)

    await service.start_ready(**settings)
    await wait_until(lambda: sent_deliveries(database_url), 30, "the delivery to be settled")
    assert [message.body for message in twilio.messages] == ["only once"]
