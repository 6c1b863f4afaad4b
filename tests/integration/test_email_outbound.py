"""Mail out: ``send_email`` from a workflow, retries while the relay is down, permanent failures,
and the Maildir outbox when no relay is configured."""

from __future__ import annotations

import mailbox
from pathlib import Path

import httpx
import pytest
from codewords_client import AsyncCodewordsClient

from tests.conftest import LiveFactory
from tests.fakes.smtp_sink import SmtpSink
from tests.integration.deliveries import delivery_rows, wait_for_delivery, wait_for_rows
from tests.integration.email_helpers import (
    BOT,
    SENDER,
    mail,
    smtp_send,
    start_email,
)


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


@pytest.mark.parametrize(
    ("inputs", "complaint"),
    [
        ({"subject": "x", "body": "y"}, "to: Field required"),
        ({"to": "not-an-address", "subject": "x", "body": "y"}, "not an email address"),
        ({"to": SENDER, "subject": "a\r\nBcc: x@y.test", "body": "y"}, "one line"),
        ({"to": SENDER, "subject": "x", "body": "y", "attachments": ["/etc/passwd"]}, "file URI"),
    ],
    ids=["no-to", "bad-address", "header-injection", "bad-attachment"],
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
