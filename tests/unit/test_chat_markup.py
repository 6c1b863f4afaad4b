"""The chat tester's window markup (console/chat_markup.py): the channel's marks become
elements, everything else stays text, whatever a reply contains."""

from __future__ import annotations

import pytest

from console.chat_markup import slack_html, whatsapp_html
from triggers.slack.render import render_mrkdwn


def test_slack_marks_become_elements() -> None:
    mrkdwn = render_mrkdwn("**bold** _it_ ~~gone~~ `x < y`\n\n> quoted\n\n```\na <b> c\n```")
    assert str(slack_html(mrkdwn)) == (
        "<strong>bold</strong> <em>it</em> <del>gone</del> <code>x &lt; y</code><br><br>"
        "<blockquote>quoted</blockquote><pre><code>a &lt;b&gt; c</code></pre>"
    )


@pytest.mark.parametrize(
    ("markdown", "shown"),
    [
        ("<script>alert(1)</script>", "&lt;script&gt;alert(1)&lt;/script&gt;"),
        ('<img src=x onerror="alert(1)">', "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;"),
        ("[click](javascript:alert(1))", "[click](javascript:alert(1))"),
        ("a & b", "a &amp; b"),
    ],
)
def test_a_slack_reply_cannot_inject_markup(markdown: str, shown: str) -> None:
    assert str(slack_html(render_mrkdwn(markdown))) == shown + "<br>"


def test_slack_links_are_links_only_for_web_and_mail_addresses() -> None:
    html = str(slack_html("<https://example.org/?a=1&amp;b=2|the *site*> <ftp://x|ftp> <@U1>"))
    assert html == (
        '<a href="https://example.org/?a=1&amp;b=2" rel="noopener noreferrer">the '
        '<strong>site</strong></a> ftp <span class="mention">@U1</span><br>'
    )
    assert str(slack_html('<javascript:alert(1)|"x">')) == "&#34;x&#34;<br>"


def test_whatsapp_text_is_escaped_then_marked() -> None:
    html = str(whatsapp_html("*Hi* <b>there</b> _you_\n> said\n```\n<tag>\n```"))
    assert html == (
        "<strong>Hi</strong> &lt;b&gt;there&lt;/b&gt; <em>you</em><br>"
        "<blockquote>said</blockquote><pre><code>&lt;tag&gt;</code></pre>"
    )


def test_marks_inside_words_stay_text() -> None:
    assert str(whatsapp_html("snake_case_name and 2*3*4")) == "snake_case_name and 2*3*4<br>"
