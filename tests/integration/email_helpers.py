"""Shared by the email tests: a configured live server, mails to send, runs to look up."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest
from sqlalchemy import select

from core.inbox import EventInfo, EventStatus
from dispatch.tables import runs
from tests.conftest import Live, LiveFactory, free_port
from tests.fakes.smtp_sink import SmtpSink

SENDER = "alice@sender.test"
BOT = "bot@example.test"
MAILGUN_KEY = "mg-signing-key"
SENDGRID_TOKEN = "sg-secret-token"


async def start_email(live_factory: LiveFactory, sink: SmtpSink, **email: Any) -> Live:
    section: dict[str, Any] = {
        "smtp_port": free_port(),
        "addresses": [BOT],
        "workflow": "echo",
        "relay_url": sink.url,
        "mailgun_signing_key": MAILGUN_KEY,
        "sendgrid_token": SENDGRID_TOKEN,
    }
    section.update(email)
    return await live_factory.start(email=section)


def mail(
    subject: str = "Hello",
    body: str = "Can you help me?",
    *,
    sender: str = SENDER,
    to: str = BOT,
    headers: dict[str, str] | None = None,
) -> EmailMessage:
    message = EmailMessage()
    message["From"] = f"Alice Example <{sender}>"
    message["To"] = to
    message["Subject"] = subject
    message["Message-ID"] = make_msgid(domain="sender.test")
    for name, value in (headers or {}).items():
        message[name] = value
    message.set_content(body)
    return message


async def smtp_send(live: Live, message: EmailMessage, *, mail_from: str | None = None) -> None:
    port = live.settings.email.smtp_port
    assert port is not None
    await aiosmtplib.send(
        message, hostname="127.0.0.1", port=port, start_tls=False, sender=mail_from, timeout=20
    )


async def inbox_events(live: Live, trigger: str | None = None) -> list[EventInfo]:
    """The email events in the inbox, oldest first."""
    found, _ = await live.services.inbox.events(
        trigger=trigger, status=None, limit=500, cursor=None, include_body=False
    )
    return sorted((e for e in found if e.trigger.startswith("email:")), key=lambda e: e.id)


async def settled(live: Live, *, timeout: float = 20, attempted: bool = False) -> list[EventInfo]:
    """The email events once none is pending (processed, ignored or failed); with
    ``attempted``, once each pending one has been tried at least once instead."""
    deadline = time.monotonic() + timeout
    while True:
        events = await inbox_events(live)
        waiting = [
            e
            for e in events
            if e.status is EventStatus.PENDING and not (attempted and e.attempts > 0)
        ]
        if not waiting:
            return events
        if time.monotonic() > deadline:
            raise AssertionError(f"email events still pending: {waiting}")
        await asyncio.sleep(0.05)  # re-read: the processor may be on another node's loop


async def email_runs(live: Live) -> list[dict[str, Any]]:
    """The runs mail made, once the inbox processed every mail it took."""
    await settled(live)
    async with live.services.database.read() as conn:
        rows = await conn.execute(select(runs).where(runs.c.source == "email").order_by(runs.c.id))
        return [dict(row) for row in rows.mappings()]


async def run_of(live: Live, message: EmailMessage) -> dict[str, Any]:
    key = f"email:{message['Message-ID']}"
    found = [run for run in await email_runs(live) if run["idempotency_key"] == key]
    assert len(found) == 1, found
    return found[0]


def inputs_of(run: dict[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(run["request_body"])
    return body


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is needed to make a test certificate")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@asynccontextmanager
async def failing_inserts(live: Live, table: str) -> AsyncIterator[None]:
    """Every INSERT into ``table`` fails in the database itself (a trigger), while inside.

    In the database rather than in SQLAlchemy's cursor events: the intake writes SQLite's
    inbox and runs rows straight through the driver (dispatch/sqlite_driver), past those events.
    """
    database = live.services.database
    name = f"fail_inserts_{table}"
    if database.is_sqlite:
        create = [
            f"CREATE TRIGGER {name} BEFORE INSERT ON {table} "
            "BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END"
        ]
        drop = [f"DROP TRIGGER {name}"]
    else:
        create = [
            f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql "
            "AS $$ BEGIN RAISE EXCEPTION 'disk I/O error'; END $$",
            f"CREATE TRIGGER {name} BEFORE INSERT ON {table} "
            f"FOR EACH ROW EXECUTE FUNCTION {name}()",
        ]
        drop = [f"DROP TRIGGER {name} ON {table}", f"DROP FUNCTION {name}()"]
    async with database.write() as conn:
        for statement in create:
            await conn.exec_driver_sql(statement)
    try:
        yield
    finally:
        async with database.write() as conn:
            for statement in drop:
                await conn.exec_driver_sql(statement)
