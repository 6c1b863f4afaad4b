"""Inbound-parse webhooks: Mailgun (signed route forwards) and SendGrid (raw MIME)."""

from __future__ import annotations

import json
import secrets
import time

import httpx
import pytest

from tests.conftest import Live, LiveFactory
from tests.fakes.smtp_sink import SmtpSink
from tests.integration.email_helpers import (
    BOT,
    MAILGUN_KEY,
    SENDER,
    SENDGRID_TOKEN,
    email_runs,
    inputs_of,
    mail,
    run_of,
    start_email,
)
from triggers.email.webhooks import mailgun_signature


def mailgun_form(
    message_id: str, *, key: str = MAILGUN_KEY, age: int = 0, token: str | None = None
) -> dict[str, str]:
    timestamp = str(int(time.time()) - age)
    token = token or secrets.token_hex(25)
    return {
        "timestamp": timestamp,
        "token": token,
        "signature": mailgun_signature(key.encode(), timestamp, token),
        "recipient": BOT,
        "sender": SENDER,
        "from": f"Alice <{SENDER}>",
        "subject": "Via Mailgun",
        "body-plain": "Hello from Mailgun\n\nOn Sun, Bot wrote:\n> earlier\n",
        "stripped-text": "Hello from Mailgun",
        "message-headers": json.dumps(
            [
                ["Message-Id", message_id],
                ["From", f"Alice <{SENDER}>"],
                ["To", BOT],
                ["Subject", "Via Mailgun"],
                ["Content-Type", "multipart/mixed; boundary=xyz"],
            ]
        ),
        "attachment-count": "1",
    }


async def post_mailgun(live: Live, form: dict[str, str]) -> httpx.Response:
    files = {"attachment-1": ("notes.txt", b"some notes", "text/plain")}
    async with httpx.AsyncClient() as client:
        return await client.post(f"{live.url}/email/mailgun", data=form, files=files)


async def test_mailgun_signed_forward_starts_a_run(
    live_factory: LiveFactory, sink: SmtpSink
) -> None:
    live = await start_email(live_factory, sink)
    form = mailgun_form("<mg-1@sender.test>")
    response = await post_mailgun(live, form)
    assert response.status_code == 200, response.text
    (run,) = await email_runs(live)
    inputs = inputs_of(run)
    assert run["idempotency_key"] == "email:<mg-1@sender.test>"
    assert inputs["text"] == "Hello from Mailgun"
    assert inputs["subject"] == "Via Mailgun"
    assert inputs["event"]["via"] == "mailgun"
    assert [a["filename"] for a in inputs["attachments"]] == ["notes.txt"]
    (reply,) = await sink.wait_for(1)
    assert reply["In-Reply-To"] == "<mg-1@sender.test>"

    replayed = await post_mailgun(live, form)
    assert replayed.status_code == 406
    assert "replayed" in replayed.json()["detail"]
    assert len(await email_runs(live)) == 1


@pytest.mark.parametrize(
    "tamper",
    [{"key": "wrong-key"}, {"age": 3600}],
    ids=["bad-signature", "stale-timestamp"],
)
async def test_mailgun_refuses_unsigned_or_stale_posts(
    live_factory: LiveFactory, sink: SmtpSink, tamper: dict[str, object]
) -> None:
    live = await start_email(live_factory, sink)
    response = await post_mailgun(live, mailgun_form("<mg-2@sender.test>", **tamper))  # type: ignore[arg-type]
    assert response.status_code == 406
    assert await email_runs(live) == []


async def test_sendgrid_raw_mime(live_factory: LiveFactory, sink: SmtpSink) -> None:
    live = await start_email(live_factory, sink)
    message = mail("Via SendGrid", "Hello from SendGrid")
    message.add_attachment(
        b"\x00\x01binary", maintype="application", subtype="octet-stream", filename="blob.bin"
    )
    form = {
        "email": message.as_string(),
        "envelope": json.dumps({"to": [BOT], "from": SENDER}),
        "charsets": json.dumps({"to": "UTF-8", "subject": "UTF-8", "from": "UTF-8"}),
        "to": BOT,
        "from": SENDER,
        "subject": "Via SendGrid",
    }
    async with httpx.AsyncClient() as client:
        wrong = await client.post(f"{live.url}/email/sendgrid/not-the-token", data=form)
        assert wrong.status_code == 401
        response = await client.post(f"{live.url}/email/sendgrid/{SENDGRID_TOKEN}", data=form)
        assert response.status_code == 200, response.text
        basic = await client.post(
            f"{live.url}/email/sendgrid", data=form, auth=("sendgrid", SENDGRID_TOKEN)
        )
        assert basic.status_code == 200  # the same mail again: answered, not run twice
    inputs = inputs_of(await run_of(live, message))
    assert inputs["text"] == "Hello from SendGrid"
    assert inputs["event"]["via"] == "sendgrid"
    assert inputs["attachments"][0]["size"] == len(b"\x00\x01binary")
    await sink.wait_for(1)
