"""Slack payloads → runs, without I/O: filters, mention stripping, routes, keys; mrkdwn."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from triggers.slack.payloads import (
    Chosen,
    choose_workflow,
    event_run_request,
    ignored_because,
    message_from_event,
    message_key,
    strip_mention,
    thread_of,
)
from triggers.slack.render import render_mrkdwn, split_mrkdwn
from triggers.slack.settings import SlackRoute, SlackSettings

USER_MESSAGE: dict[str, Any] = {"user": "U1", "channel": "C1", "ts": "1.1", "text": "hi"}


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"bot_id": "B9"}, "sent by a bot"),
        ({"user": "UBOT"}, "sent by this app"),
        ({"subtype": "message_changed"}, "subtype message_changed"),
        ({"subtype": "message_deleted"}, "subtype message_deleted"),
        ({"subtype": "channel_join"}, "subtype channel_join"),
        ({"subtype": "file_share"}, None),
        ({"subtype": "thread_broadcast"}, None),
        ({}, None),
    ],
)
def test_which_messages_are_answered(change: dict[str, Any], reason: str | None) -> None:
    assert ignored_because({**USER_MESSAGE, **change}, "UBOT") == reason


def test_only_our_mention_is_stripped() -> None:
    assert strip_mention("<@UBOT> ask <@U2|bob> please", "UBOT") == "ask <@U2|bob> please"
    assert strip_mention("hey <@UBOT>, hi", "UBOT") == "hey , hi"


def test_thread_and_key_of_a_message() -> None:
    assert thread_of({"ts": "1.1"}) == "1.1"
    assert thread_of({"ts": "1.2", "thread_ts": "1.1"}) == "1.1"
    assert message_key("T1", "C1", "1.2") == "slack:T1:C1:1.2"


def test_routes_match_channel_command_and_keyword_in_order() -> None:
    settings = SlackSettings(
        workflow="general",
        routes=(
            SlackRoute(workflow="ask", commands=("/ask",)),
            SlackRoute(workflow="support", channels=("C9",)),
            SlackRoute(workflow="summary", keyword="summarize", inputs={"style": "short"}),
        ),
    )
    chosen = choose_workflow(settings, channel="C1", text="x", command="/ask")
    assert chosen is not None and chosen.workflow == "ask"
    assert choose_workflow(settings, channel="C1", text="x", command="/other") is not None
    chosen = choose_workflow(settings, channel="C9", text="summarize this")
    assert chosen is not None and chosen.workflow == "support"
    chosen = choose_workflow(settings, channel="C1", text="Summarize: this please")
    assert chosen is not None and (chosen.workflow, chosen.text) == ("summary", "this please")
    chosen = choose_workflow(settings, channel="C1", text="hello")
    assert chosen is not None and chosen.workflow == "general" and chosen.route is None
    assert choose_workflow(SlackSettings(), channel="C1", text="hello") is None


@pytest.mark.parametrize(
    ("markdown", "mrkdwn"),
    [
        ("**bold** and *italic* and ~~gone~~", "*bold* and _italic_ and ~gone~"),
        ("a & b < c > d", "a &amp; b &lt; c &gt; d"),
        ("[docs](https://x.io/a?b=1&c=2)", "<https://x.io/a?b=1&amp;c=2|docs>"),
        ("<https://x.io>", "<https://x.io>"),
        ("`a<b`", "`a&lt;b`"),
        ("```py\nif a < b:\n    pass\n```", "```\nif a &lt; b:\n    pass\n```"),
        ("- one\n- two\n  - nested", "• one\n• two\n    • nested"),
        ("1. first\n2. second", "1. first\n2. second"),
        ("# Title\n\ntext", "*Title*\n\ntext"),
        ("> quoted **x**", "> quoted *x*"),
        ("line one\nline two", "line one\nline two"),
    ],
)
def test_markdown_is_rendered_as_mrkdwn(markdown: str, mrkdwn: str) -> None:
    assert render_mrkdwn(markdown) == mrkdwn


def test_the_reply_target_names_the_workspace_and_its_enterprise() -> None:
    message = message_from_event(
        {**USER_MESSAGE, "thread_ts": "1.0"},
        bot_user_id="UBOT",
        sender_name=None,
        attachments=(),
        received_at=datetime(2026, 11, 22, tzinfo=UTC),
    )
    chosen = Chosen("echo", "hi", None)
    grid = event_run_request(
        message,
        chosen,
        owner_id="o",
        team_id="T1",
        event_id="Ev1",
        enterprise_id="E1",
        enterprise_install=True,
    )
    assert grid.reply_target is not None
    assert grid.reply_target.details == {
        "team_id": "T1",
        "enterprise_id": "E1",
        "enterprise_install": True,
        "message_ts": "1.1",
    }
    assert grid.reply_target.thread_id == "1.0"
    plain = event_run_request(message, chosen, owner_id="o", team_id="T1", event_id=None)
    assert plain.reply_target is not None
    assert plain.reply_target.details == {"team_id": "T1", "message_ts": "1.1"}


def test_long_mrkdwn_is_never_split_inside_a_link() -> None:
    markdown = "see " * 40 + "[the full quarterly report for all regions](https://example.com/q3)"
    mrkdwn = render_mrkdwn(markdown + " and more text after the link" * 10)
    link = "<https://example.com/q3|the full quarterly report for all regions>"
    assert link in mrkdwn
    parts = split_mrkdwn(mrkdwn, 200)
    assert all(len(part) <= 200 for part in parts)
    assert sum(part.count(link) for part in parts) == 1
    assert all(part.count("<") == part.count(">") for part in parts)
