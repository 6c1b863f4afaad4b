"""Mail into our SMTP port (aiosmtplib / smtplib) → a run → one threaded reply at the relay sink."""

from __future__ import annotations

import asyncio
import smtplib
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import httpx
import pytest
from sqlalchemy import select

from dispatch.tables import runs
from tests.conftest import LiveFactory, free_port
from tests.fakes.smtp_sink import SmtpSink
from tests.integration.deliveries import delivery_rows
from tests.integration.email_helpers import (
    BOT,
    SENDER,
    email_runs,
    failing_inserts,
    inbox_events,
    inputs_of,
    mail,
    run_of,
    self_signed_certificate,
    settled,
    smtp_send,
    start_email,
)
from triggers.email.settings import EmailSettings


async def test_mail_gets_one_threaded_reply(live_factory: LiveFactory, sink: SmtpSink) -> None:
    live = await start_email(live_factory, sink)
    question = mail("Quarterly numbers", "What were the **numbers**?")
    await smtp_send(live, question)

    (reply,) = await sink.wait_for(1)
    run = await run_of(live, question)
    assert reply["Subject"] == "Re: Quarterly numbers"
    assert reply["In-Reply-To"] == question["Message-ID"]
    assert reply["References"] == question["Message-ID"]
    assert reply["Message-ID"] == f"<{run['id']}@example.test>"
    assert reply["Auto-Submitted"] == "auto-replied"
    assert reply["From"] == BOT
    assert reply["To"] == SENDER
    assert reply.get_content_type() == "multipart/alternative"
    text = reply.get_body(preferencelist=("plain",))
    html = reply.get_body(preferencelist=("html",))
    assert text is not None and html is not None
    assert "What were the **numbers**?" in text.get_content()
    assert "<strong>numbers</strong>" in html.get_content()
    inputs = inputs_of(run)
    assert inputs["channel"] == "email"
    assert inputs["sender"] == {"id": SENDER, "name": "Alice Example"}
    assert inputs["conversation"]["id"] == question["Message-ID"]
    assert inputs["subject"] == "Quarterly numbers"

    # The answer to our reply continues the conversation, even with References trimmed.
    follow_up = mail(
        "Re: Quarterly numbers",
        "And last year?",
        headers={
            "In-Reply-To": reply["Message-ID"],
        },
    )
    await smtp_send(live, follow_up)
    _, second = await sink.wait_for(2)
    assert inputs_of(await run_of(live, follow_up))["conversation"]["id"] == question["Message-ID"]
    assert second["Subject"] == "Re: Quarterly numbers"
    assert second["References"] == f"{reply['Message-ID']} {follow_up['Message-ID']}"


async def test_foreign_recipient_is_refused_with_550(
    live_factory: LiveFactory, sink: SmtpSink
) -> None:
    live = await start_email(live_factory, sink)
    port = live.settings.email.smtp_port
    assert port is not None

    def relay_attempt() -> None:
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            client.send_message(mail(to="someone@elsewhere.test"))

    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        await asyncio.to_thread(relay_attempt)
    assert refused.value.recipients["someone@elsewhere.test"][0] == 550
    assert await email_runs(live) == []


async def test_oversize_mail_is_refused_with_552(live_factory: LiveFactory, sink: SmtpSink) -> None:
    live = await start_email(live_factory, sink, max_size=4096)
    with pytest.raises(aiosmtplib.SMTPResponseException) as refused:
        await smtp_send(live, mail(body="x" * 20_000))
    assert refused.value.code == 552
    assert await email_runs(live) == []


async def test_storage_failure_in_processing_is_retried_into_one_run(
    live_factory: LiveFactory, sink: SmtpSink
) -> None:
    # Attachments are stored in processing, after the 250: the mail is in the inbox, and the
    # inbox retries its processing until the file store works again.
    live = await start_email(live_factory, sink)
    question = mail("Report", "See the attachment.")
    question.add_attachment(
        b"%PDF-1.4 fake", maintype="application", subtype="pdf", filename="report.pdf"
    )
    break_file_store(live.settings.server.data_dir)
    try:
        await smtp_send(live, question)  # 250: stored
        (failed,) = await settled(live, attempted=True)
        assert failed.attempts >= 1 and failed.error is not None
        async with live.services.database.read() as conn:
            assert (await conn.execute(select(runs.c.id))).first() is None
    finally:
        break_file_store(live.settings.server.data_dir, undo=True)
    (reply,) = await sink.wait_for(1)
    assert reply["In-Reply-To"] == question["Message-ID"]
    (run,) = await email_runs(live)
    assert inputs_of(run)["attachments"][0]["filename"] == "report.pdf"


async def test_database_failure_answers_451_and_the_retry_is_kept(
    live_factory: LiveFactory, sink: SmtpSink
) -> None:
    live = await start_email(live_factory, sink)
    question = mail("While the database is down")
    async with failing_inserts(live, "inbox_events"):
        with pytest.raises(aiosmtplib.SMTPResponseException) as failed:
            await smtp_send(live, question)
    assert failed.value.code == 451
    assert await inbox_events(live) == []
    assert await email_runs(live) == []

    await smtp_send(live, question)  # the sending MTA tries again
    (reply,) = await sink.wait_for(1)
    assert reply["In-Reply-To"] == question["Message-ID"]
    assert len(await email_runs(live)) == 1


def break_file_store(data_dir: Path, *, undo: bool = False) -> None:
    """Put a plain file where the file store's directory was: writing an attachment fails."""
    files = (data_dir / "files").resolve()
    aside = files.with_name("files-aside")
    if undo:
        files.unlink()
        aside.rename(files)
    else:
        files.rename(aside)
        files.write_text("not a directory: storing attachments fails")


async def test_duplicate_message_id_makes_one_run(
    live_factory: LiveFactory, sink: SmtpSink
) -> None:
    live = await start_email(live_factory, sink)
    question = mail()
    await smtp_send(live, question)
    await smtp_send(live, question)
    await sink.wait_for(1)
    assert len(await email_runs(live)) == 1


@pytest.mark.parametrize(
    ("headers", "mail_from", "sender", "runs"),
    [
        ({"Auto-Submitted": "auto-replied"}, None, SENDER, 0),
        ({"Precedence": "bulk"}, None, SENDER, 1),
        ({"List-Id": "<news.sender.test>"}, None, SENDER, 1),
        ({}, "", SENDER, 0),
        ({}, None, BOT, 0),
        ({}, None, "bot+tag@example.test", 0),
    ],
    ids=["auto-submitted", "precedence-bulk", "list-id", "null-sender", "own", "own-tagged"],
)
async def test_loop_rules_mean_no_reply(
    live_factory: LiveFactory,
    sink: SmtpSink,
    headers: dict[str, str],
    mail_from: str | None,
    sender: str,
    runs: int,
) -> None:
    live = await start_email(live_factory, sink, domains=["example.test"])
    await smtp_send(live, mail(sender=sender, headers=headers), mail_from=mail_from)
    started = await email_runs(live)
    assert len(started) == runs
    for run in started:
        assert run["reply_target"] == {
            "channel": "none",
            "address": None,
            "thread_id": None,
            "details": {},
        }
        finished = await live.services.gateway.wait_until_finished(run["id"], 20)
        assert finished is not None and finished.finished
    assert await delivery_rows(live) == []
    assert sink.attempts == 0


async def test_a_colleague_at_our_domain_is_answered(
    live_factory: LiveFactory, sink: SmtpSink
) -> None:
    # domains makes every address there ours to receive for, not ours to ignore as a loop.
    live = await start_email(live_factory, sink, domains=["example.test"])
    question = mail("From a colleague", sender="carol@example.test")
    await smtp_send(live, question)
    (reply,) = await sink.wait_for(1)
    assert reply["To"] == "carol@example.test"
    assert reply["In-Reply-To"] == question["Message-ID"]


async def test_replies_to_one_sender_are_rate_limited(
    live_factory: LiveFactory, sink: SmtpSink
) -> None:
    live = await start_email(live_factory, sink, auto_replies_per_hour=1)
    await smtp_send(live, mail("one"))
    # Two threads may be processed at once; the limit counts the replies decided before.
    await settled(live)
    await smtp_send(live, mail("two"))
    first, second = await email_runs(live)
    assert first["reply_target"]["channel"] == "email"
    assert second["reply_target"]["channel"] == "none"


async def test_quoted_history_is_stripped(live_factory: LiveFactory, sink: SmtpSink) -> None:
    live = await start_email(live_factory, sink)
    # Bottom-posted: the answer is below the quote, the signature below the answer.
    body = (
        "Hi Bot,\n\n"
        "On Mon, 2 Nov 2026 at 10:00, Bot <bot@example.test> wrote:\n> Shall I ship it?\n\n"
        "Yes, ship it.\n\nThanks\n-- \nAlice\n"
    )
    question = mail("Re: ship?", body)
    await smtp_send(live, question)
    inputs = inputs_of(await run_of(live, question))
    assert inputs["text"] == "Hi Bot,\n\nYes, ship it.\n\nThanks"
    assert "> Shall I ship it?" in inputs["event"]["text"]


async def test_attachment_becomes_a_url_the_workflow_can_fetch(
    live_factory: LiveFactory, sink: SmtpSink
) -> None:
    live = await start_email(live_factory, sink)
    question = mail("Scan", "Attached.")
    content = bytes(range(256)) * 40
    question.add_attachment(content, maintype="image", subtype="png", filename="scan.png")
    await smtp_send(live, question)
    (attachment,) = inputs_of(await run_of(live, question))["attachments"]
    assert attachment["filename"] == "scan.png"
    assert attachment["content_type"] == "image/png"
    assert attachment["size"] == len(content)
    async with httpx.AsyncClient() as client:
        fetched = await client.get(attachment["url"])
    assert fetched.status_code == 200
    assert fetched.content == content


async def test_html_only_mail_is_read_as_text(live_factory: LiveFactory, sink: SmtpSink) -> None:
    live = await start_email(live_factory, sink)
    question = EmailMessage()
    question["From"] = SENDER
    question["To"] = BOT
    question["Subject"] = "=?utf-8?b?SGVsbG8g4pyT?="
    question["Message-ID"] = "<html-only@sender.test>"
    question.set_content(
        "<html><body><p>Please <b>review</b> <a href='https://x.test/doc'>the doc</a>.</p>"
        "<div class='gmail_quote'>On Monday Bot wrote: old</div></body></html>",
        subtype="html",
    )
    await smtp_send(live, question)
    inputs = inputs_of(await run_of(live, question))
    assert inputs["subject"] == "Hello ✓"
    assert inputs["text"] == "Please review the doc (https://x.test/doc)."


DMARC_ROUTE = {
    "address": "ops@example.test",
    "workflow": "echo",
    "allow_senders": ["*@sender.test"],
    "require_dmarc": True,
    "inputs": {"team": "ops"},
}
OUR_PASS = "mx.example.test; dmarc=pass header.from=sender.test"


async def test_route_sender_policy_allowlist_and_dmarc(
    live_factory: LiveFactory, sink: SmtpSink
) -> None:
    live = await start_email(
        live_factory,
        sink,
        trusted_authserv_id="mx.example.test",
        trusted_relays=["127.0.0.0/8"],
        routes=[DMARC_ROUTE],
    )
    outsider = mail(to="ops@example.test", sender="mallory@evil.test")
    with pytest.raises(aiosmtplib.SMTPResponseException) as refused:
        await smtp_send(live, outsider)
    assert refused.value.code == 550

    foreign_verifier = mail(
        to="ops@example.test",
        headers={"Authentication-Results": "evil.test; dmarc=pass header.from=sender.test"},
    )
    with pytest.raises(aiosmtplib.SMTPResponseException) as unauthenticated:
        await smtp_send(live, foreign_verifier)
    assert unauthenticated.value.code == 550

    # The relay's own verdict (topmost) failed; a pass with our id further down is a forgery
    # the sender wrote before the relay saw the mail.
    below_the_relay = mail(to="ops@example.test")
    del below_the_relay["Authentication-Results"]
    below_the_relay["Authentication-Results"] = (
        "mx.example.test; dmarc=fail header.from=sender.test"
    )
    below_the_relay["Received"] = "from evil.test by mx.example.test; Mon, 2 Nov 2026 10:00 +0000"
    below_the_relay["Authentication-Results"] = OUR_PASS
    with pytest.raises(aiosmtplib.SMTPResponseException) as forged_below:
        await smtp_send(live, below_the_relay)
    assert forged_below.value.code == 550

    signed = mail(to="ops+urgent@example.test", headers={"Authentication-Results": OUR_PASS})
    await smtp_send(live, signed)  # from 127.0.0.1: a trusted relay
    inputs = inputs_of(await run_of(live, signed))
    assert inputs["team"] == "ops"
    assert inputs["event"]["tag"] == "urgent"
    (reply,) = await sink.wait_for(1)
    assert reply["From"] == "ops+urgent@example.test"


async def test_our_authserv_id_from_an_untrusted_smtp_client_is_a_forgery(
    live_factory: LiveFactory, sink: SmtpSink
) -> None:
    # No trusted_relays: we are the MX, and anyone can write "mx.example.test; dmarc=pass".
    live = await start_email(
        live_factory, sink, trusted_authserv_id="mx.example.test", routes=[DMARC_ROUTE]
    )
    forged = mail(to="ops@example.test", headers={"Authentication-Results": OUR_PASS})
    with pytest.raises(aiosmtplib.SMTPResponseException) as refused:
        await smtp_send(live, forged)
    assert refused.value.code == 550
    assert "DMARC" in refused.value.message
    assert await email_runs(live) == []


async def test_submission_port_beside_the_mx(
    live_factory: LiveFactory, sink: SmtpSink, tmp_path: Path
) -> None:
    cert, key = self_signed_certificate(tmp_path)
    live = await start_email(
        live_factory,
        sink,
        submission_port=free_port(),
        tls_cert=str(cert),
        tls_key=str(key),
        auth_username="submit",
        auth_password="s3cret",
    )
    port = live.settings.email.submission_port
    common = {"hostname": "127.0.0.1", "port": port, "cert_bundle": str(cert), "timeout": 20}
    with pytest.raises(aiosmtplib.SMTPResponseException) as plain:
        await aiosmtplib.send(mail(), start_tls=False, **common)  # type: ignore[arg-type]
    assert plain.value.code == 530  # nothing but STARTTLS before TLS
    with pytest.raises(aiosmtplib.SMTPAuthenticationError):
        await aiosmtplib.send(mail(), start_tls=True, username="submit", password="wrong", **common)  # type: ignore[arg-type]
    with pytest.raises(aiosmtplib.SMTPResponseException) as anonymous:
        await aiosmtplib.send(mail(), start_tls=True, **common)  # type: ignore[arg-type]
    assert anonymous.value.code == 530
    question = mail("Over TLS")
    await aiosmtplib.send(question, start_tls=True, username="submit", password="s3cret", **common)  # type: ignore[arg-type]
    (reply,) = await sink.wait_for(1)
    assert reply["In-Reply-To"] == question["Message-ID"]

    # The MX on smtp_port still takes other people's mail without AUTH (STARTTLS offered).
    from_outside = mail("Via the MX")
    mx = live.settings.email.smtp_port
    await aiosmtplib.send(
        from_outside, hostname="127.0.0.1", port=mx, start_tls=True, cert_bundle=str(cert)
    )
    _, second = await sink.wait_for(2)
    assert second["In-Reply-To"] == from_outside["Message-ID"]


def test_auth_without_a_submission_port_is_a_settings_error() -> None:
    with pytest.raises(ValueError, match="submission_port"):
        EmailSettings(auth_username="u", auth_password="p")  # type: ignore[arg-type]
