"""Mail out: ``send_email`` from a workflow, retries while the relay is down, permanent failures,
and the Maildir outbox when no relay is configured."""

from __future__ import annotations

import asyncio
import json
import mailbox
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from codewords_client import AsyncCodewordsClient

from core.models import ReplyTarget, RunRequest, Source
from tests.conftest import Live, LiveFactory
from tests.fakes.smtp_sink import SmtpSink
from tests.integration.deliveries import delivery_rows, wait_for_delivery, wait_for_rows
from tests.integration.email_helpers import (
    BOT,
    SENDER,
    mail,
    self_signed_certificate,
    smtp_send,
    start_email,
)
from triggers.email.sender import retry_delay
from triggers.file_tables import files


async def test_send_email_from_a_workflow(live_factory: LiveFactory, sink: SmtpSink) -> None:
    live = await start_email(live_factory, sink, from_address="Switchboard <bot@example.test>")
    await live.register("caller")
    async with AsyncCodewordsClient(base_url=live.url, api_key=live.key) as client:
        report = await client.upload_file_content("report.csv", b"month,total\njan,10\n")
        response = await client.run(
            "caller",
            {
                "service_id": "send_email",
                "inputs": {
                    "to": "carol@sender.test",
                    "cc": ["dave@sender.test"],
                    "bcc": "erin@sender.test",
                    "subject": "Monthly report",
                    "body": "# Report\n\nTotal: **10**",
                    "reply_to": "team@example.test",
                    "attachments": [report],
                },
            },
        )
    assert response.status_code == 200, response.text
    message_id = response.json()["inner"]["message_id"]

    (sent,) = await sink.wait_for(1)
    assert sent["Message-ID"] == message_id
    assert sent["From"] == "Switchboard <bot@example.test>"
    assert sent["To"] == "carol@sender.test"
    assert sent["Cc"] == "dave@sender.test"
    assert sent["Bcc"] is None
    assert sent["Reply-To"] == "team@example.test"
    assert sent["Subject"] == "Monthly report"
    assert sent["Auto-Submitted"] == "auto-generated"
    assert sorted(sink.envelopes[0][1]) == [
        "carol@sender.test",
        "dave@sender.test",
        "erin@sender.test",
    ]
    html = sent.get_body(preferencelist=("html",))
    assert html is not None and "<h1>Report</h1>" in html.get_content()
    (attachment,) = sent.iter_attachments()
    assert attachment.get_filename() == "report.csv"
    assert attachment.get_content().replace("\r\n", "\n") == "month,total\njan,10\n"


METADATA_URL = "http://169.254.169.254/latest/meta-data/iam"
FORGED_FILE_URL = "http://127.0.0.1:1/files/file_0/a.txt?expires=9999999999&sig=forged"


@pytest.mark.parametrize(
    ("inputs", "complaint"),
    [
        ({"subject": "x", "body": "y"}, "to: Field required"),
        ({"to": "not-an-address", "subject": "x", "body": "y"}, "not an email address"),
        ({"to": SENDER, "subject": "a\r\nBcc: x@y.test", "body": "y"}, "one line"),
        ({"to": SENDER, "subject": "x", "body": "y", "attachments": ["/etc/passwd"]}, "file URI"),
        (
            {"to": SENDER, "subject": "x", "body": "y", "attachments": [METADATA_URL]},
            "attachments: Value error, item 0: '" + METADATA_URL + "' is not a download URI",
        ),
        (
            {"to": SENDER, "subject": "x", "body": "y", "attachments": [FORGED_FILE_URL]},
            "attachments: Value error, item 0: 'http://127.0.0.1:1/files/file_0/a.txt': invalid",
        ),
    ],
    ids=["no-to", "bad-address", "header-injection", "bad-attachment", "ssrf", "forged"],
)
async def test_send_email_validates_its_inputs(
    live_factory: LiveFactory, sink: SmtpSink, inputs: dict[str, object], complaint: str
) -> None:
    live = await start_email(live_factory, sink)
    async with httpx.AsyncClient(base_url=live.url, headers={"Authorization": live.key}) as http:
        response = await http.post("/run/send_email", json=inputs)
    assert response.status_code == 400
    assert complaint in response.json()["detail"]
    assert await delivery_rows(live) == []


async def test_relay_down_then_up_delivers_once(live_factory: LiveFactory, sink: SmtpSink) -> None:
    live = await start_email(live_factory, sink)
    await sink.stop()
    question = mail("While the relay is down")
    await smtp_send(live, question)
    (row,) = await wait_for_rows(live, lambda r: r["attempts"] >= 1 and r["status"] == "pending")
    assert "unreachable" in str(row["last_error"])

    await sink.start()
    await wait_for_delivery(live, str(row["run_id"]), "sent")
    (reply,) = sink.messages
    assert reply["In-Reply-To"] == question["Message-ID"]


async def test_relay_4xx_is_retried_and_5xx_is_final(
    live_factory: LiveFactory, sink: SmtpSink
) -> None:
    live = await start_email(live_factory, sink)
    sink.answer = "451 4.3.0 busy, try later"
    await smtp_send(live, mail("Busy relay"))
    (row,) = await wait_for_rows(live, lambda r: r["attempts"] >= 1 and r["status"] == "pending")
    assert "451" in str(row["last_error"])

    sink.answer = "550 5.1.1 no such user"
    await wait_for_delivery(live, str(row["run_id"]), "failed")
    (failed,) = await delivery_rows(live)
    assert "550" in str(failed["last_error"])
    assert sink.messages == []


async def test_without_a_relay_replies_go_to_the_maildir_outbox(
    live_factory: LiveFactory, sink: SmtpSink
) -> None:
    live = await start_email(live_factory, sink, relay_url=None)
    question = mail("Demo")
    await smtp_send(live, question)
    await wait_for_rows(live, lambda r: r["status"] == "sent")
    outbox = _maildir(Path(live.settings.server.data_dir, "outbox"))
    (stored,) = outbox
    assert stored["In-Reply-To"] == question["Message-ID"]
    assert stored["To"] == SENDER and stored["From"] == BOT


def _maildir(path: Path) -> list[mailbox.MaildirMessage]:
    return list(mailbox.Maildir(path, create=False))


@pytest.fixture
async def listener() -> AsyncIterator[tuple[str, list[bytes]]]:
    """A URL on 127.0.0.1 that records every connection (the server must never open one)."""
    seen: list[bytes] = []

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await reader.read(1024))
        writer.close()

    server = await asyncio.start_server(record, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}/internal/secret.txt", seen
    server.close()
    await server.wait_closed()


async def reply_with(live: Live, reply: dict[str, object]) -> str:
    """A run of the echo built-in whose answer is ``reply``, to be answered by email."""
    submitted = await live.services.gateway.submit(
        RunRequest(
            owner_id="default",
            service_id="echo",
            body=json.dumps({"reply": reply}),
            source=Source.EMAIL,
            reply_target=ReplyTarget(
                channel="email",
                address=SENDER,
                details={"subject": "Files", "in_reply_to": "<q@sender.test>", "from": BOT},
            ),
        )
    )
    return submitted.id


async def test_reply_attaches_our_files_and_links_any_other_url(
    live_factory: LiveFactory, sink: SmtpSink, listener: tuple[str, list[bytes]]
) -> None:
    internal_url, connections = listener
    live = await start_email(live_factory, sink)
    _, ours = await live.services.files.store("default", "chart.png", "image/png", b"\x89PNG")
    run_id = await reply_with(
        live, {"text": "Here you are.", "attachments": [ours, internal_url, FORGED_FILE_URL]}
    )
    await wait_for_delivery(live, run_id, "sent")

    (sent,) = sink.messages
    assert sent["In-Reply-To"] == "<q@sender.test>"
    (attachment,) = sent.iter_attachments()
    assert attachment.get_filename() == "chart.png"
    assert attachment.get_content_type() == "image/png"
    assert attachment.get_content() == b"\x89PNG"
    text = sent.get_body(preferencelist=("plain",))
    assert text is not None
    body = text.get_content()
    assert body.startswith("Here you are.")
    assert f"<{internal_url}>" in body and f"<{FORGED_FILE_URL}>" in body
    assert ours.split("?")[0] not in body
    assert connections == []  # linked, never fetched from the server's network


async def test_reply_attachment_removed_from_the_store_fails_the_delivery(
    live_factory: LiveFactory, sink: SmtpSink
) -> None:
    live = await start_email(live_factory, sink)
    file_id, ours = await live.services.files.store("default", "gone.txt", "text/plain", b"x")
    async with live.services.database.write() as conn:
        await conn.execute(files.delete().where(files.c.id == file_id))
    run_id = await reply_with(live, {"text": "Here.", "attachments": [ours]})
    failed = await wait_for_delivery(live, run_id, "failed")
    assert "no longer stored" in str(failed["last_error"])
    assert sink.messages == []


async def test_recipients_the_relay_defers_are_retried_alone(
    live_factory: LiveFactory, sink: SmtpSink
) -> None:
    live = await start_email(live_factory, sink)
    sink.rcpt_answers["dave@sender.test"] = "450 4.2.1 mailbox busy, try later"
    sink.rcpt_answers["zed@sender.test"] = "550 5.1.1 no such user"
    inputs = {
        "to": "carol@sender.test",
        "cc": ["dave@sender.test", "zed@sender.test"],
        "subject": "Partly deferred",
        "body": "Hello",
    }
    async with httpx.AsyncClient(base_url=live.url, headers={"Authorization": live.key}) as http:
        response = await http.post("/run/send_email", json=inputs)
    assert response.status_code == 200, response.text
    (row,) = await wait_for_rows(live, lambda r: r["attempts"] >= 1 and r["status"] == "pending")
    assert "dave@sender.test 450" in str(row["last_error"])
    assert sink.envelopes == [("bot@example.test", ["carol@sender.test"])]

    del sink.rcpt_answers["dave@sender.test"]
    await wait_for_delivery(live, str(row["run_id"]), "sent")
    first, second = sink.messages
    assert first["Message-ID"] == second["Message-ID"]
    # The retry went to the deferred recipient only; the 5xx one was not tried again.
    assert sink.envelopes[1] == ("bot@example.test", ["dave@sender.test"])


def test_email_retries_are_spread_over_the_retry_window() -> None:
    window = 48 * 3600.0
    delays = [retry_delay(attempt, 8, window) for attempt in range(1, 9)]
    assert delays[:3] == [None, None, None]  # quick: the outbox's own backoff
    assert delays[7] is None  # the outbox gives up after its last attempt
    slow = [d for d in delays[3:7] if d is not None]
    assert len(slow) == 4 and slow == sorted(slow)
    assert sum(slow) == pytest.approx(window)
    assert retry_delay(4, 3, window) is None  # too few attempts to pace


@pytest.mark.parametrize(
    ("implicit_tls", "query"),
    [(False, "?starttls=required"), (False, ""), (True, "")],
    ids=["starttls-required", "starttls-auto", "smtps"],
)
async def test_relay_over_tls_with_auth(
    live_factory: LiveFactory, tmp_path: Path, implicit_tls: bool, query: str
) -> None:
    cert, key = self_signed_certificate(tmp_path)
    relay = SmtpSink(tls=(cert, key), implicit_tls=implicit_tls, login=("relay-user", "p@ss:w"))
    await relay.start()
    try:
        scheme = "smtps" if implicit_tls else "smtp"
        live = await start_email(
            live_factory,
            relay,
            relay_url=f"{scheme}://relay-user:p%40ss%3Aw@127.0.0.1:{relay.port}{query}",
            relay_ca_file=str(cert),
        )
        question = mail("Over a TLS relay")
        await smtp_send(live, question)
        (reply,) = await relay.wait_for(1)
        assert reply["In-Reply-To"] == question["Message-ID"]
        assert relay.sessions == [(True, "relay-user")]
    finally:
        await relay.stop()


async def test_relay_certificate_not_trusted_is_retried_not_sent(
    live_factory: LiveFactory, tmp_path: Path
) -> None:
    cert, key = self_signed_certificate(tmp_path)
    relay = SmtpSink(tls=(cert, key), implicit_tls=True)
    await relay.start()
    try:
        # No relay_ca_file: the self-signed certificate must not be accepted.
        live = await start_email(live_factory, relay, relay_url=f"smtps://127.0.0.1:{relay.port}")
        await smtp_send(live, mail("Untrusted relay"))
        (row,) = await wait_for_rows(
            live, lambda r: r["attempts"] >= 1 and r["status"] == "pending"
        )
        assert "CERTIFICATE_VERIFY_FAILED" in str(row["last_error"])
        assert relay.messages == []
    finally:
        await relay.stop()
