"""The MX's limits, through smtplib: what can never be accepted gets a 5xx, and no mail (nor
its retry) can make the server store more than one copy of a bounded number of files."""

from __future__ import annotations

import asyncio
import smtplib
from email.message import EmailMessage
from email.policy import SMTP
from typing import Any

import pytest
from sqlalchemy import event, func, select

from tests.conftest import Live, LiveFactory
from tests.fakes.smtp_sink import SmtpSink
from tests.integration.email_helpers import (
    BOT,
    SENDER,
    email_runs,
    failing_inserts,
    mail,
    settled,
    start_email,
)
from triggers.file_tables import files


def smtp_port(live: Live) -> int:
    port = live.settings.email.smtp_port
    assert port is not None
    return port


async def stored_files(live: Live) -> int:
    async with live.services.database.read() as conn:
        return int((await conn.execute(select(func.count()).select_from(files))).scalar_one())


def with_attachments(count: int) -> EmailMessage:
    message = mail("Many files", "See attached.")
    for index in range(count):
        message.add_attachment(
            bytes([index % 256]),
            maintype="application",
            subtype="octet-stream",
            filename=f"f{index}.bin",
        )
    return message


def send_raw(port: int, mail_from: str, rcpt: list[str], raw: bytes) -> dict[str, Any]:
    with smtplib.SMTP("127.0.0.1", port, timeout=20) as client:
        return dict(client.sendmail(mail_from, rcpt, raw))


async def test_recipients_past_one_hundred_are_deferred_with_452(
    live_factory: LiveFactory, sink: SmtpSink
) -> None:
    live = await start_email(live_factory, sink, domains=["example.test"])
    recipients = [f"bot+{n}@example.test" for n in range(101)]
    refused = await asyncio.to_thread(
        send_raw, smtp_port(live), SENDER, recipients, mail().as_bytes(policy=SMTP)
    )
    # RFC 5321 §4.5.3.1.10: 452 for the ones past the limit; the MTA sends them later.
    assert list(refused) == [recipients[100]]
    assert refused[recipients[100]][0] == 452
    assert len(await email_runs(live)) == 1


async def test_too_many_attachments_are_refused_with_552_and_nothing_stored(
    live_factory: LiveFactory, sink: SmtpSink
) -> None:
    live = await start_email(live_factory, sink, max_attachments=5)
    with pytest.raises(smtplib.SMTPDataError) as refused:
        await asyncio.to_thread(
            send_raw, smtp_port(live), SENDER, [BOT], with_attachments(6).as_bytes(policy=SMTP)
        )
    assert refused.value.smtp_code == 552
    assert b"too many attachments (limit 5)" in refused.value.smtp_error
    assert await email_runs(live) == []
    assert await stored_files(live) == 0


async def test_a_hundred_attachments_take_one_transaction_and_a_retry_adds_none(
    live_factory: LiveFactory, sink: SmtpSink
) -> None:
    live = await start_email(live_factory, sink)
    engine = live.services.database.engine.sync_engine
    inserts: list[str] = []

    def count_file_inserts(
        conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool
    ) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO FILES"):
            inserts.append(statement)

    raw = with_attachments(100).as_bytes(policy=SMTP)
    event.listen(engine, "before_cursor_execute", count_file_inserts)
    async with failing_inserts(live, "runs"):
        # Stored in the inbox (250); processing stores the files, then fails to make the run.
        await asyncio.to_thread(send_raw, smtp_port(live), SENDER, [BOT], raw)
        (tried,) = await settled(live, attempted=True)
        statements = len(inserts)
    assert await stored_files(live) == 100
    assert statements == tried.attempts  # one insert of all the files per attempt, not per file

    # The inbox processes the mail again (and the MTA's retry is the same event).
    await asyncio.to_thread(send_raw, smtp_port(live), SENDER, [BOT], raw)
    event.remove(engine, "before_cursor_execute", count_file_inserts)
    assert len(await email_runs(live)) == 1
    assert await stored_files(live) == 100


def nested_mime(depth: int) -> bytes:
    head = (
        f"From: {SENDER}\r\nTo: {BOT}\r\nSubject: deep\r\nMessage-ID: <deep@sender.test>\r\n"
        "MIME-Version: 1.0\r\n"
    ).encode()
    opening = b"".join(
        b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i)
        for i in range(depth)
    )
    closing = b"".join(b"\r\n--b%d--\r\n" % i for i in reversed(range(depth)))
    return head + opening + b"Content-Type: text/plain\r\n\r\nhi" + closing


async def test_mime_nested_three_thousand_deep_is_refused_for_good(
    live_factory: LiveFactory, sink: SmtpSink
) -> None:
    live = await start_email(live_factory, sink)
    with pytest.raises(smtplib.SMTPDataError) as refused:
        await asyncio.to_thread(send_raw, smtp_port(live), SENDER, [BOT], nested_mime(3000))
    assert refused.value.smtp_code == 554
    assert b"nested deeper than" in refused.value.smtp_error
    assert await email_runs(live) == []


async def test_mail_from_that_is_not_utf8_is_refused_for_good(
    live_factory: LiveFactory, sink: SmtpSink
) -> None:
    live = await start_email(live_factory, sink)

    def invalid_sender() -> tuple[int, bytes]:
        with smtplib.SMTP("127.0.0.1", smtp_port(live), timeout=20) as client:
            client.ehlo()
            client.send(b"MAIL FROM:<\xff\xfe@sender.test>\r\n")
            return client.getreply()

    code, message = await asyncio.to_thread(invalid_sender)
    assert code == 553, message
    assert await email_runs(live) == []
