"""Email rules without I/O: text extraction, loop rules, sender authenticity, routing, replies."""

from __future__ import annotations

from datetime import UTC, datetime
from email.message import EmailMessage

import pytest

from triggers.email.authentication import authenticated_from, sender_allowed, topmost_results
from triggers.email.loops import Disposition, loop_verdict
from triggers.email.parse import parse_email
from triggers.email.render import compose_mail, reply_subject
from triggers.email.routing import RouteMatch, Router
from triggers.email.settings import EmailRoute, EmailSettings
from triggers.email.text import html_to_text, strip_quoted


def raw_mail(headers: dict[str, str], body: str = "hi") -> bytes:
    message = EmailMessage()
    message["From"] = headers.pop("From", "alice@sender.test")
    message["To"] = "bot@example.test"
    message["Subject"] = "s"
    message["Message-ID"] = "<m1@sender.test>"
    for name, value in headers.items():
        message[name] = value
    message.set_content(body)
    return message.as_bytes()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Sure.\n\nOn Tue, 3 Nov 2026, Bot <b@x.test> wrote:\n> q\n", "Sure."),
        ("Sure.\nOn Tue, 3 Nov 2026 at 10:00 Bot Name <\nb@x.test> wrote:\n> q", "Sure."),
        ("Sure.\n\n-----Original Message-----\nFrom: x\n", "Sure."),
        ("Sure.\n\nFrom: Bot\nSent: Tuesday\nTo: Alice\n\nold", "Sure."),
        ("Sure.\n-- \nAlice, CEO", "Sure."),
        ("> quoted only", "> quoted only"),
        ("Inline:\n> question one\nanswer one", "Inline:\nanswer one"),
    ],
)
def test_strip_quoted(text: str, expected: str) -> None:
    assert strip_quoted(text) == expected


def test_html_to_text_skips_style_and_marks_quotes() -> None:
    html = (
        "<html><head><style>p{}</style></head><body><p>Hi &amp; bye</p><ul><li>one</li></ul>"
        "<blockquote>old text</blockquote></body></html>"
    )
    assert html_to_text(html) == "Hi & bye\n\n- one\n\n> old text"


@pytest.mark.parametrize(
    ("headers", "envelope_from", "expected"),
    [
        ({}, "alice@sender.test", Disposition.RUN),
        ({"Auto-Submitted": "no"}, None, Disposition.RUN),
        ({"Auto-Submitted": "auto-replied"}, None, Disposition.DROP),
        ({"Auto-Submitted": "auto-generated"}, None, Disposition.SILENT),
        ({"X-Autoreply": "yes"}, None, Disposition.DROP),
        ({"Precedence": "junk"}, None, Disposition.SILENT),
        ({"List-Unsubscribe": "<mailto:u@x.test>"}, None, Disposition.SILENT),
        ({"X-Auto-Response-Suppress": "OOF, AutoReply"}, None, Disposition.SILENT),
        ({}, "", Disposition.DROP),
        ({"From": "MAILER-DAEMON@mx.sender.test"}, None, Disposition.DROP),
        ({"From": "no-reply@sender.test"}, None, Disposition.SILENT),
        ({"From": "bot+x@example.test"}, None, Disposition.DROP),
    ],
)
def test_loop_rules(
    headers: dict[str, str], envelope_from: str | None, expected: Disposition
) -> None:
    router = Router(EmailSettings(addresses=("bot@example.test",), workflow="echo"))
    verdict = loop_verdict(parse_email(raw_mail(headers)), envelope_from, router.is_own_address)
    assert verdict.disposition is expected


def test_own_addresses_are_ours_not_the_whole_domain() -> None:
    router = Router(
        EmailSettings(
            domains=("example.test",),
            addresses=("bot@example.test",),
            from_address="Switchboard <noreply-bot@example.test>",
            workflow="echo",
            routes=(EmailRoute(address="ops+x@example.test", workflow="ops"),),
        )
    )
    assert router.is_own_address("Bot+tag@example.test")
    assert router.is_own_address("noreply-bot@example.test")
    assert router.is_own_address("ops@example.test")
    assert not router.is_own_address("carol@example.test")  # a colleague
    assert router.is_ours("carol@example.test")  # still routed
    colleague = parse_email(raw_mail({"From": "carol@example.test"}))
    assert loop_verdict(colleague, None, router.is_own_address).disposition is Disposition.RUN


@pytest.mark.parametrize(
    ("results", "ok"),
    [
        (["mx.example.test; dmarc=pass header.from=sender.test"], True),
        (["mx.example.test 1; dkim=pass (good) header.d=sender.test"], True),
        (["mx.example.test; dkim=pass header.d=mail.sender.test"], False),
        (["mx.example.test; dkim=pass header.d=other.test; dmarc=fail"], False),
        (["evil.test; dmarc=pass header.from=sender.test"], False),
        (["mx.example.test; spf=pass smtp.mailfrom=sender.test"], False),
    ],
)
def test_authenticated_from(results: list[str], ok: bool) -> None:
    assert authenticated_from(results, "alice@sender.test", "mx.example.test") is ok


def test_only_the_topmost_results_of_our_verifier_count() -> None:
    ours_fail = ("Authentication-Results", "mx.example.test; dmarc=fail")
    ours_pass = ("Authentication-Results", "mx.example.test; dmarc=pass")
    received = ("Received", "from x by mx.example.test")
    other = ("Authentication-Results", "other.test; dmarc=pass")
    fields = [received, ours_fail, ours_pass, received, other, ours_pass]
    assert topmost_results(fields, "MX.example.test") == [ours_fail[1], ours_pass[1]]
    assert topmost_results([other, received], "mx.example.test") == []
    assert topmost_results([ours_pass], None) == []


def test_trusted_relays_are_ips_and_networks() -> None:
    settings = EmailSettings(trusted_relays=("192.0.2.0/24", "2001:db8::1"))
    assert settings.is_trusted_relay("192.0.2.7")
    assert settings.is_trusted_relay("::ffff:192.0.2.7")
    assert settings.is_trusted_relay("2001:db8::1")
    assert not settings.is_trusted_relay("198.51.100.1")
    assert not settings.is_trusted_relay(None)
    assert not EmailSettings().is_trusted_relay("127.0.0.1")
    with pytest.raises(ValueError, match="not an IP"):
        EmailSettings(trusted_relays=("mx.example.test",))


def test_sender_allowlist() -> None:
    assert sender_allowed("alice@sender.test", [])
    assert sender_allowed("Alice@Sender.test", ["*@sender.test"])
    assert not sender_allowed("mallory@evil.test", ["*@sender.test"])


def test_routing_by_address_and_plus_tag() -> None:
    router = Router(
        EmailSettings(
            domains=("example.test",),
            workflow="default-flow",
            routes=(
                EmailRoute(address="bot+sales@example.test", workflow="sales"),
                EmailRoute(address="support@other.test", workflow="support"),
            ),
        )
    )
    assert (router.route("bot+sales@example.test") or _none()).workflow == "sales"
    assert (router.route("anyone@example.test") or _none()).workflow == "default-flow"
    tagged = router.route("support+urgent@other.test") or _none()
    assert (tagged.workflow, tagged.tag) == ("support", "urgent")
    assert router.route("x@other.test") is None
    assert router.route("bot@elsewhere.test") is None


def _none() -> RouteMatch:
    raise AssertionError("no route")


def test_reply_headers() -> None:
    assert reply_subject("Re: RE: hi") == "Re: RE: hi"
    assert reply_subject("hi") == "Re: hi"
    message = compose_mail(
        sender="bot@example.test",
        target={
            "address": "alice@sender.test",
            "details": {
                "subject": "hi",
                "in_reply_to": "<b@x>",
                "references": ["<a@x>", "<b@x>"],
            },
        },
        text="<script>alert(1)</script> *ok*",
        message_id="<r@example.test>",
        now=datetime(2026, 11, 22, tzinfo=UTC),
        default_subject="unused",
    )
    assert message["References"] == "<a@x> <b@x>"
    html = message.get_body(preferencelist=("html",))
    assert html is not None
    assert "<script>" not in html.get_content()
    assert "<em>ok</em>" in html.get_content()
