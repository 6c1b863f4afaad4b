"""IMAP mailboxes (issue 17) against a real Dovecot: the same processing as SMTP mail."""

from __future__ import annotations

from collections import defaultdict
from email.message import EmailMessage
from email.utils import make_msgid

import aiosmtplib
import pytest
from pydantic import ValidationError
from sqlalchemy import select

from core.inbox import EventStatus
from dispatch.tables import runs
from tests.conftest import LiveFactory
from tests.dovecot import Dovecot, ImapAppender
from tests.e2e.harness import wait_until
from tests.fakes.smtp_sink import SmtpSink
from tests.integration.email_helpers import (
    BOT,
    SENDER,
    email_runs,
    inbox_events,
    inputs_of,
    mail,
    run_of,
    settled,
    smtp_send,
    start_email,
)
from tests.integration.imap_helpers import CuttingProxy, mail_to, mailbox_health, start_imap
from triggers.email.mailbox_settings import MailboxSettings
from triggers.email.settings import EmailSettings


async def _all_seen(imap: ImapAppender) -> bool:
    flags = await imap.flags()
    return bool(flags) and all("\\Seen" in line for line in flags)


async def test_a_mail_in_the_mailbox_gets_one_threaded_reply_and_is_flagged_seen(
    live_factory: LiveFactory, sink: SmtpSink, dovecot: Dovecot
) -> None:
    user = dovecot.add_user()
    live = await start_imap(live_factory, sink, user)
    question = mail_to(user, "Quarterly numbers", "What were the numbers?")
    async with dovecot.client(user) as imap:
        await imap.append(question.as_bytes())

        (reply,) = await sink.wait_for(1)
        run = await run_of(live, question)
        assert reply["In-Reply-To"] == question["Message-ID"]
        assert reply["References"] == question["Message-ID"]
        assert reply["Subject"] == "Re: Quarterly numbers"
        assert reply["From"] == f"{user.name}@example.test"
        assert reply["To"] == SENDER
        inputs = inputs_of(run)
        assert inputs["channel"] == "email"
        assert inputs["event"]["via"] == f"imap:{user.name}"
        assert inputs["conversation"]["id"] == question["Message-ID"]
        (event,) = await settled(live)
        assert event.trigger == f"email:imap:{user.name}"
        assert event.dedupe_key == f"email:{question['Message-ID']}"
        await wait_until(lambda: _all_seen(imap), 10, "the mail flagged \\Seen after its commit")

    health = await mailbox_health(live, user)
    assert health.details["connected"] is True
    assert health.details["failing"] is False
    assert health.details["last_message_at"] is not None


async def test_a_burst_of_200_mails_makes_200_runs_once_each_in_order_per_thread(
    live_factory: LiveFactory, sink: SmtpSink, dovecot: Dovecot
) -> None:
    user = dovecot.add_user()
    live = await start_imap(live_factory, sink, user)
    roots = [make_msgid(domain="sender.test") for _ in range(10)]
    sent: dict[str, list[str]] = defaultdict(list)
    async with dovecot.client(user) as imap:
        for n in range(200):
            root = roots[n % 10]
            message = mail_to(user, f"Thread {n % 10}", f"mail {n}")
            if n >= 10:
                del message["Message-ID"]
                message["Message-ID"] = make_msgid(domain="sender.test")
                message["In-Reply-To"] = root
                message["References"] = root
            else:
                del message["Message-ID"]
                message["Message-ID"] = root
            sent[root].append(message["Message-ID"])
            await imap.append(message.as_bytes())

    async def all_runs() -> list[dict[str, object]] | None:
        async with live.services.database.read() as conn:
            rows = await conn.execute(select(runs).where(runs.c.source == "email"))
            found = [dict(row) for row in rows.mappings()]
        return found if len(found) >= 200 else None

    # A generous bound: a loaded CI machine takes its time, a passing run returns at once.
    found = await wait_until(all_runs, 120, "200 runs")
    await settled(live, timeout=120)
    assert len(await email_runs(live)) == 200
    assert len(found) == 200
    keys = [str(run["idempotency_key"]) for run in found]
    assert len(set(keys)) == 200
    by_thread: dict[str, list[str]] = defaultdict(list)
    for run in sorted(found, key=lambda r: (r["created_at"], str(r["id"]))):
        by_thread[str(run["serial_key"])].append(str(run["idempotency_key"]))
    for root, ids in sent.items():
        assert by_thread[f"email:{root}"] == [f"email:{i}" for i in ids]


async def test_dovecot_restarts_and_uidvalidity_resets_lose_and_double_nothing(
    live_factory: LiveFactory, sink: SmtpSink, dovecot: Dovecot
) -> None:
    user = dovecot.add_user()
    live = await start_imap(live_factory, sink, user)
    first, second, third = (mail_to(user, f"Mail {n}") for n in range(3))
    async with dovecot.client(user) as imap:
        await imap.append(first.as_bytes())
    await sink.wait_for(1)

    # Restarted while the reader sits in IDLE: it reconnects and catches up after its last UID.
    before = (await mailbox_health(live, user)).details["connected_since"]
    dovecot.restart()
    async with dovecot.client(user) as imap:
        await imap.append(second.as_bytes())
    await sink.wait_for(2)
    health = await mailbox_health(live, user)
    assert health.details["connected_since"] != before
    # The restart was an error, but a blip within failing_after (300 s) is no failure.
    assert health.details["last_mailbox_error"] is not None
    assert health.details["failing"] is False

    # A new UIDVALIDITY makes every UID stale: the reader rescans, and the Message-IDs it
    # took before (their \Seen lost too, as in a rebuilt mailbox) make nothing new.
    validity = int(str(health.details["uid_validity"])) + 7
    dovecot.set_uid_validity(user, validity)
    async with dovecot.client(user) as imap:
        await imap.unsee_all()
    dovecot.restart()

    async def rescanned() -> bool:
        return (await mailbox_health(live, user)).details["uid_validity"] == validity

    await wait_until(rescanned, 20, "the new UIDVALIDITY taken")
    async with dovecot.client(user) as imap:
        await imap.append(third.as_bytes())
        await wait_until(lambda: _all_seen(imap), 20, "every mail flagged again")
    await sink.wait_for(3)
    runs = await email_runs(live)
    assert sorted(str(r["idempotency_key"]) for r in runs) == sorted(
        f"email:{m['Message-ID']}" for m in (first, second, third)
    )
    assert len(sink.messages) == 3
    assert len(await inbox_events(live)) == 3  # the rescan's five fetches: three events


async def test_a_connection_cut_between_fetch_and_move_processes_the_mail_once(
    live_factory: LiveFactory, sink: SmtpSink, dovecot: Dovecot
) -> None:
    user = dovecot.add_user()
    async with CuttingProxy(dovecot.port, cut_on=b"UID MOVE") as proxy:
        live = await start_imap(
            live_factory, sink, user, mailbox={"port": proxy.port, "processed_folder": "Done"}
        )
        question = mail_to(user)
        async with dovecot.client(user) as imap:
            await imap.append(question.as_bytes())
            await sink.wait_for(1)

            async def moved() -> bool:
                return await imap.count("INBOX") == 0 and await imap.count("Done") == 1

            await wait_until(moved, 20, "the mail moved to Done")
        assert proxy.cut.is_set() and proxy.connections >= 2
        await run_of(live, question)
        assert len(await inbox_events(live)) == 1
        assert len(sink.messages) == 1


async def test_a_wrong_password_shows_in_health_and_affects_nothing_else(
    live_factory: LiveFactory, sink: SmtpSink, dovecot: Dovecot
) -> None:
    wrong, good = dovecot.add_user(), dovecot.add_user()
    live = await start_email(
        live_factory,
        sink,
        mailboxes=[
            wrong.mailbox(password="not-it", failing_after=0.5),
            good.mailbox(password=None, password_secret="IMAP_PASSWORD"),
        ],
    )
    await live.services.secrets.put(
        "default", "IMAP_PASSWORD", good.password, workflow_id=None, actor="test"
    )

    async def failing() -> bool:
        return (await mailbox_health(live, wrong)).details["failing"] is True

    await wait_until(failing, 20, "the mailbox with the wrong password failing")
    details = (await mailbox_health(live, wrong)).details
    assert details["connected"] is False
    assert "AUTHENTICATIONFAILED" in str(details["last_mailbox_error"])

    # The other mailbox (its password from the secret store) and the SMTP port go on.
    by_imap, by_smtp = mail_to(good), mail("Over SMTP")
    async with dovecot.client(good) as imap:
        await imap.append(by_imap.as_bytes())
    await smtp_send(live, by_smtp)
    await sink.wait_for(2)
    await run_of(live, by_imap)
    await run_of(live, by_smtp)
    assert (await mailbox_health(live, good)).details["connected"] is True


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # the transport's test
@pytest.mark.parametrize("tls", ["implicit", "starttls"])
async def test_a_mailbox_over_implicit_tls_or_starttls(
    live_factory: LiveFactory, sink: SmtpSink, dovecot: Dovecot, tls: str
) -> None:
    user = dovecot.add_user()
    port = dovecot.tls_port if tls == "implicit" else dovecot.port
    live = await start_imap(
        live_factory, sink, user, mailbox={"tls": tls, "port": port, "ca_file": str(dovecot.cert)}
    )
    question = mail_to(user)
    async with dovecot.client(user) as imap:
        await imap.append(question.as_bytes())
    await sink.wait_for(1)
    await run_of(live, question)
    assert (await mailbox_health(live, user)).details["connected"] is True


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_suspended_mailbox_trigger_holds_its_mail_until_resumed(
    live_factory: LiveFactory, sink: SmtpSink, dovecot: Dovecot
) -> None:
    user = dovecot.add_user()
    live = await start_imap(live_factory, sink, user)
    trigger = f"email:imap:{user.name}"
    await live.services.inbox.suspend(trigger)
    question = mail_to(user)
    async with dovecot.client(user) as imap:
        await imap.append(question.as_bytes())
        # Held in the inbox, and the mailbox's mail flagged: it is ours now.
        await wait_until(lambda: _all_seen(imap), 10, "the held mail flagged")
    (event,) = await inbox_events(live, trigger)
    assert event.status is EventStatus.HELD
    await live.services.inbox.resume(trigger)
    await sink.wait_for(1)
    await run_of(live, question)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_server_without_idle_is_polled_every_poll_seconds(
    live_factory: LiveFactory, sink: SmtpSink, dovecot: Dovecot
) -> None:
    user = dovecot.add_user()
    # Dovecot's 127.0.0.2 listener offers no IDLE (tests/dovecot.py).
    live = await start_imap(
        live_factory, sink, user, mailbox={"host": "127.0.0.2", "poll_seconds": 0.2}
    )
    first, second = mail_to(user), mail_to(user)
    async with dovecot.client(user) as imap:
        await imap.append(first.as_bytes())
        await sink.wait_for(1)
        await imap.append(second.as_bytes())
        await sink.wait_for(2)
    await run_of(live, first)
    await run_of(live, second)
    # Taken by polling on one connection, not by reconnecting after a refused IDLE.
    assert (await mailbox_health(live, user)).details["last_mailbox_error"] is None


def _malformed(message_id: str, to: str) -> bytes:
    return (
        f"From: {SENDER}\r\nTo: {to}\r\nSubject: broken\r\nMessage-ID: {message_id}\r\n"
        "MIME-Version: 1.0\r\nContent-Type: multipart/mixed\r\n"
        "Content-Transfer-Encoding: base64\r\n\r\n--x\r\n%%% not base64 \xff\r\n"
    ).encode("latin-1")


BIG = 14 * 1024 * 1024


def _big(to: str) -> EmailMessage:
    message = mail("Big", "See attached", to=to)
    # 14 MiB in base64 make a mail of about 20 MiB (under [email] max_size, 25 MiB).
    message.add_attachment(b"\x00" * BIG, maintype="application", subtype="zip")
    return message


async def test_a_20_mib_mail_and_a_malformed_mail_fare_as_they_do_over_smtp(
    live_factory: LiveFactory, sink: SmtpSink, dovecot: Dovecot
) -> None:
    user = dovecot.add_user()
    live = await start_imap(live_factory, sink, user)
    address = f"{user.name}@example.test"
    big_smtp, big_imap = _big(BOT), _big(address)
    broken_smtp = _malformed(make_msgid(domain="sender.test"), BOT)
    broken_imap = _malformed(make_msgid(domain="sender.test"), address)
    await smtp_send(live, big_smtp)
    port = live.settings.email.smtp_port
    assert port is not None
    await aiosmtplib.send(
        broken_smtp, sender=SENDER, recipients=[BOT], hostname="127.0.0.1", port=port
    )
    async with dovecot.client(user) as imap:
        await imap.append(big_imap.as_bytes())
        await imap.append(broken_imap)

    async def four() -> bool:
        return len(await settled(live, timeout=60)) == 4

    await wait_until(four, 60, "four mails in the inbox")
    events: dict[str, list[tuple[str, str | None]]] = defaultdict(list)
    for event in await inbox_events(live):
        events[event.trigger].append((event.status.value, event.ignored_reason))
    assert events["email:smtp"] == events[f"email:imap:{user.name}"]
    sizes = {
        inputs_of(await run_of(live, m))["attachments"][0]["size"] for m in (big_smtp, big_imap)
    }
    assert sizes == {BIG}


def test_mailboxes_need_unique_names_and_a_workflow() -> None:
    box = {"host": "127.0.0.1", "tls": "none", "username": "bot@example.com", "password": "x"}
    with pytest.raises(ValidationError, match="share a name"):
        EmailSettings.model_validate(
            {"workflow": "echo", "mailboxes": [{**box, "name": "a"}, {**box, "name": "a"}]}
        )
    with pytest.raises(ValidationError, match="no workflow for its mail"):
        EmailSettings.model_validate({"mailboxes": [{**box, "name": "a"}]})
    routed = EmailSettings.model_validate(
        {
            "routes": [{"address": "bot@example.com", "workflow": "echo"}],
            "mailboxes": [{**box, "name": "a"}],
        }
    )
    assert routed.mailboxes[0].mail_address == "bot@example.com"


def test_tls_none_is_refused_beyond_loopback_and_one_password_is_needed() -> None:
    base = {"name": "sales", "host": "imap.example.com", "username": "bot@example.com"}
    with pytest.raises(ValidationError, match="only to a loopback host"):
        MailboxSettings.model_validate({**base, "tls": "none", "password": "x"})
    with pytest.raises(ValidationError, match="password or password_secret"):
        MailboxSettings.model_validate(base)
    with pytest.raises(ValidationError, match="password or password_secret"):
        MailboxSettings.model_validate({**base, "password": "x", "password_secret": "IMAP"})
    local = MailboxSettings.model_validate(
        {**base, "host": "127.0.0.1", "tls": "none", "password": "x"}
    )
    assert local.port == 993 and local.folder == "INBOX" and local.trigger == "email:imap:sales"
