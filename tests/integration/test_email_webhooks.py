"""Inbound-parse webhooks: Mailgun (signed route forwards) and SendGrid (raw MIME)."""

from __future__ import annotations

import base64
import json
import secrets
import time

import httpx
import pytest

from core.inbox import EventStatus
from tests.conftest import Live, LiveFactory
from tests.fakes.smtp_sink import SmtpSink
from tests.integration.email_helpers import (
    BOT,
    MAILGUN_KEY,
    SENDER,
    SENDGRID_TOKEN,
    email_runs,
    inbox_events,
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
        # Outlook's top-posted reply: its rule and header block are not the reply.
        "body-plain": (
            "Hello from Mailgun\n\n________________________________\n"
            f"From: Bot <{BOT}>\nSent: Sunday, November 1, 2026 09:00\nTo: {SENDER}\n"
            "Subject: Via Mailgun\n\nearlier\n"
        ),
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


def latin1_mail(body: str, *, attachment: bytes = b"") -> bytes:
    """A mail as SendGrid forwards it: 8-bit Latin-1 bytes, not UTF-8."""
    head = (
        f"From: =?iso-8859-1?q?J=F6rg?= <{SENDER}>\r\nTo: {BOT}\r\nSubject: Gruesse\r\n"
        "Message-ID: <latin1@sender.test>\r\nMIME-Version: 1.0\r\n"
    )
    if not attachment:
        text = "Content-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: 8bit\r\n"
        return (head + text + "\r\n" + body + "\r\n").encode("latin-1")
    encoded = base64.encodebytes(attachment).replace(b"\n", b"\r\n")
    return (
        (
            head + 'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n--b1\r\n'
            "Content-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: 8bit\r\n"
            "\r\n" + body + "\r\n--b1\r\nContent-Type: application/octet-stream\r\n"
            'Content-Disposition: attachment; filename="big.bin"\r\n'
            "Content-Transfer-Encoding: base64\r\n\r\n"
        ).encode("latin-1")
        + encoded
        + b"--b1--\r\n"
    )


async def post_sendgrid_multipart(live: Live, raw: bytes) -> httpx.Response:
    envelope = json.dumps({"to": [BOT], "from": SENDER})
    files = {
        "email": (None, raw),
        "envelope": (None, envelope.encode()),
        "charsets": (None, b'{"to":"UTF-8","subject":"UTF-8","from":"UTF-8"}'),
    }
    async with httpx.AsyncClient(timeout=30) as client:
        return await client.post(f"{live.url}/email/sendgrid/{SENDGRID_TOKEN}", files=files)


async def test_sendgrid_latin1_8bit_mail_is_read_as_bytes(
    live_factory: LiveFactory, sink: SmtpSink
) -> None:
    live = await start_email(live_factory, sink)
    raw = latin1_mail("Grüße aus Köln, ça va?")
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")  # what aiohttp's post() did, answering 500
    response = await post_sendgrid_multipart(live, raw)
    assert response.status_code == 200, response.text
    (run,) = await email_runs(live)
    inputs = inputs_of(run)
    assert inputs["text"] == "Grüße aus Köln, ça va?"
    assert inputs["sender"] == {"id": SENDER, "name": "Jörg"}
    assert run["idempotency_key"] == "email:<latin1@sender.test>"


async def test_sendgrid_body_over_one_mebibyte_within_the_limit(
    live_factory: LiveFactory, sink: SmtpSink
) -> None:
    live = await start_email(live_factory, sink)
    attachment = bytes(range(256)) * 6 * 1024  # 1.5 MiB, 2 MiB once base64-encoded
    response = await post_sendgrid_multipart(live, latin1_mail("Big one", attachment=attachment))
    assert response.status_code == 200, response.text
    (run,) = await email_runs(live)
    assert [a["size"] for a in inputs_of(run)["attachments"]] == [len(attachment)]


async def test_sendgrid_body_over_the_limit_is_413(
    live_factory: LiveFactory, sink: SmtpSink
) -> None:
    live = await start_email(live_factory, sink, max_size=64 * 1024)
    attachment = bytes(range(256)) * 6 * 1024
    response = await post_sendgrid_multipart(live, latin1_mail("Too big", attachment=attachment))
    assert response.status_code == 413
    assert await email_runs(live) == []


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("text/plain", b"email=hello"),
        ("multipart/form-data; boundary=b1", b"--b1\r\nno headers end here"),
        ("multipart/form-data", b"--b1\r\n\r\nx\r\n--b1--\r\n"),
    ],
    ids=["not-a-form", "truncated-multipart", "no-boundary"],
)
async def test_sendgrid_malformed_body_is_400(
    live_factory: LiveFactory, sink: SmtpSink, content_type: str, body: bytes
) -> None:
    live = await start_email(live_factory, sink)
    async with httpx.AsyncClient() as client:
        response = await client.post(
            f"{live.url}/email/sendgrid/{SENDGRID_TOKEN}",
            content=body,
            headers={"Content-Type": content_type},
        )
    assert response.status_code == 400, response.text
    assert response.json()["detail"]
    assert await email_runs(live) == []


@pytest.mark.parametrize("sender", ["", "<>"])
async def test_mailgun_null_sender_is_a_bounce(
    live_factory: LiveFactory, sink: SmtpSink, sender: str
) -> None:
    live = await start_email(live_factory, sink)
    form = {**mailgun_form("<bounce@sender.test>"), "sender": sender}
    response = await post_mailgun(live, form)
    assert response.status_code == 200, response.text
    assert await email_runs(live) == []
    (bounce,) = await inbox_events(live, "email:mailgun")
    assert bounce.status is EventStatus.IGNORED
    assert bounce.ignored_reason == "null sender (a bounce or delivery report)"


async def test_mailgun_body_over_one_mebibyte(live_factory: LiveFactory, sink: SmtpSink) -> None:
    live = await start_email(live_factory, sink)
    big = bytes(range(256)) * 6 * 1024  # 1.5 MiB: over aiohttp's default client_max_size
    files = {"attachment-1": ("big.bin", big, "application/octet-stream")}
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.post(
            f"{live.url}/email/mailgun", data=mailgun_form("<mg-big@sender.test>"), files=files
        )
    assert response.status_code == 200, response.text
    (run,) = await email_runs(live)
    assert [a["size"] for a in inputs_of(run)["attachments"]] == [len(big)]
