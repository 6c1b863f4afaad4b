"""IMAP mailboxes (issue 17) against a real Dovecot: one mail, one run, one threaded reply."""

from __future__ import annotations

from tests.conftest import LiveFactory
from tests.dovecot import Dovecot
from tests.e2e.harness import wait_until
from tests.fakes.smtp_sink import SmtpSink
from tests.integration.email_helpers import inputs_of, run_of, settled
from tests.integration.imap_helpers import mail_to, mailbox_health, start_imap


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
        assert reply["To"] == "alice@sender.test"
        inputs = inputs_of(run)
        assert inputs["channel"] == "email"
        assert inputs["event"]["via"] == f"imap:{user.name}"
        assert inputs["conversation"]["id"] == question["Message-ID"]
        (event,) = await settled(live)
        assert event.trigger == f"email:imap:{user.name}"
        assert event.dedupe_key == f"email:{question['Message-ID']}"
        await wait_until(
            lambda: _seen(imap), timeout=10, what="the mail flagged \\Seen after its commit"
        )

    health = await mailbox_health(live, user)
    assert health.details["connected"] is True
    assert health.details["failing"] is False
    assert health.details["last_message_at"] is not None


async def _seen(imap: object) -> bool:
    from tests.dovecot import ImapAppender

    assert isinstance(imap, ImapAppender)
    flags = await imap.flags()
    return bool(flags) and all("\\Seen" in line for line in flags)
