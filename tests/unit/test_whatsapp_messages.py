"""WhatsApp without I/O: Markdown rendering, message planning, routing and parsing."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from core.replies import Reply
from triggers.whatsapp.parse import (
    RoutedMessage,
    chat_key,
    inbound_message,
    media_items,
    route_message,
)
from triggers.whatsapp.render import (
    BODY_LIMIT,
    OutboundMessage,
    numbered_parts,
    render_for_whatsapp,
    session_messages,
    template_message,
)
from triggers.whatsapp.settings import WhatsAppRoute, WhatsAppSettings


@pytest.mark.parametrize(
    ("markdown", "expected"),
    [
        ("**bold**, *it*, _it_ and ~~gone~~", "*bold*, _it_, _it_ and ~gone~"),
        ("# Title\n\ntext", "*Title*\n\ntext"),
        (
            "see [the docs](https://x.test/d) or <https://y.test>",
            "see the docs (https://x.test/d) or https://y.test",
        ),
        ("use `pip`", "use `pip`"),
        ("```python\nx = 1\n```", "```\nx = 1\n```"),
        ("- one\n- two\n  1. nested", "• one\n• two\n   1. nested"),
        ("3. three\n4. four", "3. three\n4. four"),
        ("> quoted\n> lines", "> quoted\n> lines"),
        ("line one  \nline two", "line one\nline two"),
    ],
)
def test_markdown_is_rendered_in_whatsapp_formatting(markdown: str, expected: str) -> None:
    assert render_for_whatsapp(markdown) == expected


def test_short_text_is_one_unnumbered_part() -> None:
    assert numbered_parts("hello") == ["hello"]
    assert numbered_parts("   ") == []


def test_long_text_is_split_on_sentences_and_numbered() -> None:
    text = " ".join(f"This is sentence number {n}." for n in range(400))
    parts = numbered_parts(text)
    assert len(parts) > 3
    for number, part in enumerate(parts, 1):
        assert len(part) <= BODY_LIMIT
        body, suffix = part.rsplit(" (", 1)
        assert suffix == f"{number}/{len(parts)})"
        assert body.endswith(".")
    assert " ".join(part.rsplit(" (", 1)[0] for part in parts) == text


def test_code_blocks_stay_fenced_across_parts() -> None:
    code = "\n".join(f"print({n})  # line {n}" for n in range(200))
    parts = numbered_parts(render_for_whatsapp(f"```\n{code}\n```"))
    assert len(parts) > 1
    for part in parts:
        body = part.rsplit(" (", 1)[0]
        assert body.startswith("```\n") and body.endswith("\n```")


def test_attachments_follow_the_text_one_media_url_each() -> None:
    reply = Reply(text="**Here**", attachments=("https://f.test/a.png", "https://f.test/b.pdf"))
    assert session_messages(reply) == [
        OutboundMessage(body="*Here*"),
        OutboundMessage(media_url="https://f.test/a.png"),
        OutboundMessage(media_url="https://f.test/b.pdf"),
    ]


def test_template_variables_are_filled_and_limited() -> None:
    reply = Reply(text="x" * 2000 + " {run_id}")
    message = template_message(
        reply, "HX1", {"1": "{text}", "2": "{workflow}/{run_id}"}, run_id="req_1", workflow="wf"
    )
    assert message.body is None and message.content_sid == "HX1"
    variables = json.loads(message.content_variables or "")
    assert len(variables["1"]) == BODY_LIMIT and variables["1"].endswith("…")
    assert variables["2"] == "wf/req_1"


METRIC = {"units": "metric"}
SETTINGS = WhatsAppSettings(
    workflow="fallback",
    routes=(
        WhatsAppRoute(workflow="sales", to="+14155550100"),
        WhatsAppRoute(workflow="weather", keyword="Weather", inputs={"units": "metric"}),
        WhatsAppRoute(workflow="support-help", to="whatsapp:+14155550200", keyword="help"),
    ),
)


@pytest.mark.parametrize(
    ("to", "body", "expected"),
    [
        ("whatsapp:+14155550100", "weather in Paris", RoutedMessage("sales", "weather in Paris")),
        (
            "whatsapp:+14155238886",
            "WEATHER in Paris",
            RoutedMessage("weather", "in Paris", {"units": "metric"}),
        ),
        ("whatsapp:+14155550200", "help me", RoutedMessage("support-help", "me")),
        ("whatsapp:+14155238886", "help me", RoutedMessage("fallback", "help me")),
        ("whatsapp:+14155238886", "", RoutedMessage("fallback", "")),
        # The keyword is followed by whitespace or punctuation, in any case.
        (
            "whatsapp:+14155238886",
            "weather: Paris",
            RoutedMessage("weather", "Paris", {"units": "metric"}),
        ),
        (
            "whatsapp:+14155238886",
            "Weather,\tLyon",
            RoutedMessage("weather", "Lyon", {"units": "metric"}),
        ),
        ("whatsapp:+14155238886", "WEATHER?", RoutedMessage("weather", "", {"units": "metric"})),
        (
            "whatsapp:+14155238886",
            "weather\n-5 today",
            RoutedMessage("weather", "-5 today", {"units": "metric"}),
        ),
        ("whatsapp:+14155238886", "weather…", RoutedMessage("weather", "", {"units": "metric"})),
        ("whatsapp:+14155238886", "weatherman says", RoutedMessage("fallback", "weatherman says")),
        ("whatsapp:+14155238886", "weather2 x", RoutedMessage("fallback", "weather2 x")),
    ],
)
def test_routes_match_by_receiving_number_and_leading_keyword(
    to: str, body: str, expected: RoutedMessage
) -> None:
    assert route_message(SETTINGS, to, body) == expected


def test_without_a_default_workflow_unrouted_messages_go_nowhere() -> None:
    settings = WhatsAppSettings(routes=(WhatsAppRoute(workflow="w", keyword="go"),))
    assert route_message(settings, "whatsapp:+1", "stop") is None


def test_a_route_needs_a_condition() -> None:
    with pytest.raises(ValidationError, match="needs `to`, `keyword` or both"):
        WhatsAppRoute(workflow="w")


def test_a_post_becomes_the_channel_neutral_message() -> None:
    params = {
        "From": "whatsapp:+15005550006",
        "To": "whatsapp:+14155238886",
        "Body": "hi",
        "ProfileName": "Ann",
        "NumMedia": "2",
        "MediaUrl0": "https://api.twilio.com/m/0",
        "MediaContentType0": "image/jpeg",
        "MediaUrl1": "https://api.twilio.com/m/1",
        "OriginalRepliedMessageSid": "SM1",
    }
    moment = datetime(2026, 11, 22, 10, tzinfo=UTC)
    message = inbound_message(
        params, RoutedMessage("w", "hi"), attachments=(), received_at=moment, media_errors=["x"]
    )
    inputs = message.to_inputs({"extra": 1})
    assert inputs["sender"] == {"id": "whatsapp:+15005550006", "name": "Ann"}
    assert inputs["conversation"]["id"] == "whatsapp:+15005550006"
    assert inputs["event"]["OriginalRepliedMessageSid"] == "SM1"
    assert inputs["event"]["media_errors"] == ["x"]
    assert inputs["received_at"] == "2026-11-22T10:00:00.000000Z" and inputs["extra"] == 1
    assert media_items(params) == [
        ("https://api.twilio.com/m/0", "image/jpeg"),
        ("https://api.twilio.com/m/1", "application/octet-stream"),
    ]
    assert chat_key("whatsapp:+14155238886", "whatsapp:+15005550006") == (
        "whatsapp:+14155238886:+15005550006"
    )
