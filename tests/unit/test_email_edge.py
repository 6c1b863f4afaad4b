"""The email ack path against the in-memory inbox: a real SMTP listener (smtplib) and the real
webhooks sub-application (aiohttp on 127.0.0.1), no database: what is stored, under which keys,
and what is refused before anything is stored."""

from __future__ import annotations

import asyncio
import json
import smtplib
from collections.abc import AsyncIterator
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from core.clock import SystemClock
from core.db import Database
from dispatch.inbox_memory import MemoryInbox
from tests.conftest import free_port
from triggers.email.edge import MailEdge
from triggers.email.headers import mime_shape
from triggers.email.settings import EmailSettings
from triggers.email.smtp import start_smtp_servers
from triggers.email.threads import ThreadStore
from triggers.email.webhooks import EmailWebhooks, WebhookParts, mailgun_signature

BOT = "bot@example.test"
SENDER = "alice@sender.test"
TOKEN = "sg-token"


def settings(**overrides: Any) -> EmailSettings:
    values: dict[str, Any] = {
        "smtp_port": free_port(),
        "addresses": [BOT],
        "workflow": "echo",
        "sendgrid_token": TOKEN,
        "mailgun_signing_key": "mg-key",
        "max_attachments": 3,
        "routes": [
            {"address": "ops@example.test", "workflow": "ops", "allow_senders": ["*@ok.test"]}
        ],
    }
    values.update(overrides)
    return EmailSettings.model_validate(values)


def mail(*, message_id: str | None = "<q1@sender.test>", to: str = BOT, **headers: str) -> bytes:
    message = EmailMessage()
    message["From"] = f"Alice <{SENDER}>"
    message["To"] = to
    message["Subject"] = "Hello"
    if message_id is not None:
        message["Message-ID"] = message_id
    for name, value in headers.items():
        message[name.replace("_", "-")] = value
    message.set_content("Can you help?")
    return message.as_bytes(policy=SMTP)


def with_files(count: int) -> bytes:
    message = EmailMessage()
    message["From"] = SENDER
    message["To"] = BOT
    message["Message-ID"] = "<files@sender.test>"
    message.set_content("see attached")
    message.add_alternative("<p>see attached</p>", subtype="html")
    for index in range(count):
        message.add_attachment(
            b"x", maintype="application", subtype="octet-stream", filename=f"f{index}.bin"
        )
    return message.as_bytes(policy=SMTP)


class Listener:
    def __init__(self, config: EmailSettings) -> None:
        self.inbox = MemoryInbox()
        self.edge = MailEdge(config, self.inbox)
        self.port = config.smtp_port or 0

    def send(self, raw: bytes, *, rcpt: list[str] | None = None, mail_from: str = SENDER) -> Any:
        with smtplib.SMTP("127.0.0.1", self.port, timeout=10) as client:
            return client.sendmail(mail_from, rcpt or [BOT], raw)


@pytest.fixture
async def smtp() -> AsyncIterator[Listener]:
    config = settings()
    listener = Listener(config)
    servers = await start_smtp_servers(listener.edge, config, hostname="example.test")
    yield listener
    for server in servers:
        server.close()
        await server.wait_closed()


async def test_smtp_mail_is_stored_raw_with_its_keys(smtp: Listener) -> None:
    raw = mail(References="<root@sender.test> <mid@sender.test>", In_Reply_To="<mid@sender.test>")
    await asyncio.to_thread(smtp.send, raw)
    await asyncio.to_thread(smtp.send, raw)  # the sending MTA's retry: acknowledged again
    (entry,) = smtp.inbox.entries
    event = entry.event
    assert event.trigger == "email:smtp"
    assert event.dedupe_key == "email:<q1@sender.test>"
    assert event.ordering_key == "email:<root@sender.test>"
    assert b"Message-ID: <q1@sender.test>" in event.body
    assert event.headers == {"rcpt-to": BOT, "mail-from": SENDER, "peer": "127.0.0.1"}


async def test_smtp_keys_without_references_or_message_id(smtp: Listener) -> None:
    await asyncio.to_thread(smtp.send, mail(message_id="<solo@sender.test>"))
    await asyncio.to_thread(smtp.send, mail(message_id=None))
    first, second = (entry.event for entry in smtp.inbox.entries)
    assert first.ordering_key == "email:<solo@sender.test>"
    assert second.dedupe_key is None
    assert second.ordering_key.startswith("email:<sha256.")


@pytest.mark.parametrize(
    ("raw", "rcpt", "code", "words"),
    [
        (mail(), ["someone@elsewhere.test"], 550, b"do not relay"),
        (with_files(4), [BOT], 552, b"too many attachments (limit 3)"),
        (mail(to="ops@example.test"), ["ops@example.test"], 550, b"may not write"),
    ],
    ids=["foreign-recipient", "too-many-attachments", "sender-not-allowed"],
)
async def test_smtp_refusals_store_nothing(
    smtp: Listener, raw: bytes, rcpt: list[str], code: int, words: bytes
) -> None:
    with pytest.raises((smtplib.SMTPRecipientsRefused, smtplib.SMTPDataError)) as refused:
        await asyncio.to_thread(smtp.send, raw, rcpt=rcpt)
    error = refused.value
    answer: tuple[int, bytes | str]
    if isinstance(error, smtplib.SMTPRecipientsRefused):
        answer = error.recipients[rcpt[0]]
    else:
        assert isinstance(error, smtplib.SMTPDataError)
        answer = (error.smtp_code, error.smtp_error)
    assert answer[0] == code
    assert isinstance(answer[1], bytes) and words in answer[1]
    assert smtp.inbox.entries == []


async def test_a_bounce_to_an_allowlisted_route_is_taken_not_refused(smtp: Listener) -> None:
    # Loop rules drop it in processing; refusing it would bounce a bounce.
    await asyncio.to_thread(
        smtp.send, mail(to="ops@example.test"), rcpt=["ops@example.test"], mail_from=""
    )
    (entry,) = smtp.inbox.entries
    assert entry.event.headers["mail-from"] == ""


def test_mime_shape_counts_files_and_depth_without_parsing() -> None:
    assert mime_shape(with_files(3), max_depth=50).attachments == 3
    assert mime_shape(mail(), max_depth=50).depth == 1
    assert mime_shape(with_files(1), max_depth=50).depth == 3


@pytest.fixture
async def webhooks(tmp_path: Path) -> AsyncIterator[tuple[str, MemoryInbox]]:
    config = settings()
    inbox = MemoryInbox()
    # The database is never opened: SendGrid and refused Mailgun posts do not reach it.
    threads = ThreadStore(Database(f"sqlite+aiosqlite:///{tmp_path / 'unused.db'}"), SystemClock())
    parent = web.Application()
    parent.add_subapp(
        "/email",
        EmailWebhooks(config, WebhookParts(MailEdge(config, inbox), threads, SystemClock())).app(),
    )
    runner = web.AppRunner(parent)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}", inbox
    await runner.cleanup()


async def test_sendgrid_post_is_stored_and_a_retry_is_one_event(
    webhooks: tuple[str, MemoryInbox],
) -> None:
    url, inbox = webhooks
    form = {"email": mail().decode(), "envelope": json.dumps({"to": [BOT], "from": SENDER})}
    async with httpx.AsyncClient() as client:
        first = await client.post(f"{url}/email/sendgrid/{TOKEN}", data=form)
        again = await client.post(f"{url}/email/sendgrid", data=form, auth=("sendgrid", TOKEN))
        wrong = await client.post(f"{url}/email/sendgrid/nope", data=form)
    assert first.status_code == 200, first.text
    assert first.json() == {"accepted": True, "outcome": "accepted", "id": "evt_000001"}
    assert again.json()["outcome"] == "duplicate"
    assert wrong.status_code == 401
    (entry,) = inbox.entries
    assert entry.event.trigger == "email:sendgrid"
    assert entry.event.headers == {"rcpt-to": BOT, "mail-from": SENDER}


async def test_mailgun_bad_signature_is_refused_before_anything(
    webhooks: tuple[str, MemoryInbox],
) -> None:
    url, inbox = webhooks
    form = {
        "timestamp": "1",
        "token": "t" * 50,
        "signature": mailgun_signature(b"other-key", "1", "t" * 50),
        "recipient": BOT,
        "body-mime": mail().decode(),
    }
    async with httpx.AsyncClient() as client:
        refused = await client.post(f"{url}/email/mailgun", data=form)
    assert refused.status_code == 406
    assert refused.json() == {"detail": "invalid signature"}
    assert inbox.entries == []
