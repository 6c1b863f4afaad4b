"""The visible reply: what a person wrote above, below or between the quoted history."""

from __future__ import annotations

from email.message import EmailMessage

import pytest

from triggers.email.parse import parse_email
from triggers.email.text import strip_quoted

OUTLOOK_UNDERSCORES = """Approved, go ahead.

Regards,
Dana

________________________________
From: Switchboard <bot@example.test>
Sent: Monday, November 2, 2026 10:00 AM
To: Dana Ruiz <dana@sender.test>
Subject: Approve invoice 4411?

Invoice 4411 from Acme is waiting for your approval.
"""

OUTLOOK_DASHES = """Approved, go ahead.

 -----------------------------

*From:* Switchboard [mailto:bot@example.test]
*Sent:* Monday, November 2, 2026 10:00 AM
*To:* dana@sender.test
*Subject:* Approve invoice 4411?

Invoice 4411 from Acme is waiting for your approval.
"""

GMAIL_TOP = """Approved, go ahead.

On Mon, Nov 2, 2026 at 10:00 AM Switchboard <bot@example.test>
wrote:

> Invoice 4411 from Acme is waiting for your approval.
>
"""

BOTTOM_POST = """Hi,

On Mon, 2 Nov 2026 at 10:00, Switchboard wrote:
> Invoice 4411 from Acme is waiting for your approval.
> Reply "approve" or "reject".

approve, but pay it next week.

Dana
-- \nDana Ruiz, Finance
"""

INTERLEAVED = """On Mon, Nov 2, 2026 at 10:00 AM Switchboard <bot@example.test> wrote:

> Which cost centre?

CC-17

> And the project code?

P-2026-04, please.

> --
> Switchboard
"""

LIST_FOOTER = """Looks good to me.

-Dana


_______________________________________________
finance mailing list
finance@lists.example.test
"""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            OUTLOOK_UNDERSCORES, "Approved, go ahead.\n\nRegards,\nDana", id="outlook-rule"
        ),
        pytest.param(OUTLOOK_DASHES, "Approved, go ahead.", id="outlook-dashes"),
        pytest.param(GMAIL_TOP, "Approved, go ahead.", id="gmail-wrapped-attribution"),
        pytest.param(BOTTOM_POST, "Hi,\n\napprove, but pay it next week.\n\nDana", id="bottom"),
        pytest.param(INTERLEAVED, "CC-17\n\nP-2026-04, please.", id="interleaved"),
        pytest.param(LIST_FOOTER, "Looks good to me.", id="list-footer-and-sign-off"),
        pytest.param(
            "Sure.\n\nSent from my desk, not my phone.",
            "Sure.\n\nSent from my desk, not my phone.",
            id="sent-from-in-a-sentence",
        ),
        pytest.param("Sure.\n\nSent from my iPhone", "Sure.", id="sent-from-my-phone"),
        pytest.param(
            "A rule:\n\n-----\n\nstays when no header follows.",
            "A rule:\n\n-----\n\nstays when no header follows.",
            id="dashes-alone-stay",
        ),
        pytest.param(
            "Options:\n\n-a first\n\n-b second", "Options:\n\n-a first\n\n-b second", id="flags"
        ),
    ],
)
def test_the_visible_reply(text: str, expected: str) -> None:
    assert strip_quoted(text) == expected


def _html_mail(html: str) -> bytes:
    message = EmailMessage()
    message["From"] = "dana@sender.test"
    message["To"] = "bot@example.test"
    message["Subject"] = "Re: Approve invoice 4411?"
    message.set_content(html, subtype="html")
    return message.as_bytes()


def test_an_outlook_html_reply_loses_its_header_block() -> None:
    html = (
        "<html><body><div>Approved, go ahead.</div>"
        '<hr style="display:inline-block;width:98%"><div id="divRplyFwdMsg">'
        "<b>From:</b> Switchboard &lt;bot@example.test&gt;<br><b>Sent:</b> Monday<br>"
        "<b>To:</b> Dana<br><b>Subject:</b> Approve invoice 4411?</div>"
        "<div>Invoice 4411 is waiting.</div></body></html>"
    )
    assert parse_email(_html_mail(html)).text == "Approved, go ahead."


def test_a_gmail_html_reply_below_the_quote_is_kept() -> None:
    html = (
        "<html><body><div>Hi,</div><div class='gmail_quote'><div class='gmail_attr'>"
        "On Mon, Switchboard wrote:</div><blockquote>Invoice 4411 is waiting.</blockquote>"
        "</div><div>approve it</div></body></html>"
    )
    assert parse_email(_html_mail(html)).text == "Hi,\n\napprove it"
