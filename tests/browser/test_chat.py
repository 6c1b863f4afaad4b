"""The console's chat tester in real Chromium against the demo (nothing configured): a round trip
as a Slack user, a WhatsApp user and an email sender, each answered by ``examples/hello.py`` and
shown without a reload as that channel renders it. In order: the first test signs in."""

from __future__ import annotations

import json

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from tests.browser.conftest import ConsoleServer, Screenshot

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

REPLY_SECONDS = 60_000
"""ms for the first answer: the run of hello.py may start its environment cold."""


def _runs(server: ConsoleServer, source: str) -> list[dict[str, object]]:
    answer = httpx.get(
        f"{server.url}/api/v1/runs",
        params={"source": source},
        headers={"Authorization": f"Bearer {server.admin_key}"},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    runs: list[dict[str, object]] = answer.json()["runs"]
    return runs


def test_as_a_slack_user_the_answer_arrives_as_mrkdwn(
    page: Page, console_server: ConsoleServer, screenshot: Screenshot
) -> None:
    page.goto(console_server.login_link)
    page.get_by_role("link", name="Chat tester").click()
    expect(page.get_by_role("heading", name="Speaking as a Slack user")).to_be_visible()
    expect(page.locator("#chat[data-ready='1']")).to_be_attached()
    page.get_by_label("Message").fill("Is *this* **bold**? <i>no markup</i>")
    page.get_by_role("button", name="Send").click()
    expect(page.locator("li.line.in")).to_have_count(1)
    reply = page.locator("li.line.out")
    expect(reply).to_have_count(1, timeout=REPLY_SECONDS)
    expect(reply.locator(".bubble strong")).to_have_text(["default", "bold"])
    expect(reply.locator(".bubble em")).to_have_text(["this"])
    expect(reply.locator(".bubble")).to_contain_text("<i>no markup</i>")
    expect(reply.locator(".bubble i")).to_have_count(0)
    assert page.url.endswith("/console/chat")  # no reload: the answer came over the stream
    # As in Slack: the sender swaps the :eyes: the run's start put on the message for a check.
    expect(page.locator("li.line.in .reaction")).to_have_text(["✅ :white_check_mark:"])
    screenshot(page, "chat-slack")
    [run] = _runs(console_server, "slack")
    assert run["service_id"] == "hello"
    assert run["status"] == "completed"


def test_a_second_message_is_a_new_event_with_its_own_answer(
    page: Page, console_server: ConsoleServer
) -> None:
    page.goto(console_server.url + "/console/chat")
    expect(page.locator("#chat[data-ready='1']")).to_be_attached()
    expect(page.locator("li.line")).to_have_count(2)  # the first exchange, rendered by the server
    page.get_by_label("Message").fill("And again")
    page.get_by_role("button", name="Send").click()
    expect(page.locator("li.line.in")).to_have_count(2)
    expect(page.locator("li.line.out")).to_have_count(2, timeout=REPLY_SECONDS)
    expect(page.locator("li.line.out").nth(1)).to_contain_text("And again")
    page.get_by_label("Message").fill("A third time")
    page.get_by_role("button", name="Send").click()  # the page's next id: not a duplicate
    expect(page.locator("li.line.out")).to_have_count(3, timeout=REPLY_SECONDS)
    assert len(_runs(console_server, "slack")) == 3


def test_as_a_whatsapp_user_a_long_answer_comes_in_parts(
    page: Page, console_server: ConsoleServer, screenshot: Screenshot
) -> None:
    page.goto(console_server.url + "/console/chat")
    page.get_by_label("Speak", exact=True).select_option(label="as a WhatsApp user")
    expect(page.get_by_role("heading", name="Speaking as a WhatsApp user")).to_be_visible()
    expect(page.locator("#chat[data-ready='1']")).to_be_attached()
    words = " ".join(f"word{number}" for number in range(300))  # ~2,400 characters
    page.get_by_label("Message").fill(words)
    page.get_by_role("button", name="Send").click()
    parts = page.locator("li.line.out")
    expect(parts).to_have_count(2, timeout=REPLY_SECONDS)
    for index in range(2):
        length = int(parts.nth(index).get_attribute("data-length") or "0")
        assert 0 < length <= 1600
        expect(parts.nth(index)).to_contain_text(f"({index + 1}/2)")
    expect(parts.nth(0).locator(".bubble strong")).to_have_text("default")
    expect(parts.nth(1)).to_contain_text("word299")
    screenshot(page, "chat-whatsapp")
    assert len(_runs(console_server, "whatsapp")) == 1


def test_as_an_email_sender_the_answer_is_a_threaded_mail(
    page: Page, console_server: ConsoleServer, screenshot: Screenshot
) -> None:
    page.goto(console_server.url + "/console/chat?as=email")
    expect(page.get_by_role("heading", name="Speaking as an email sender")).to_be_visible()
    expect(page.locator("#chat[data-ready='1']")).to_be_attached()
    page.get_by_label("Subject").fill("Question")
    page.get_by_label("Message").fill("Does mail work?")
    page.get_by_role("button", name="Send").click()
    mail = page.locator("li.line.out .mail")
    expect(mail).to_have_count(1, timeout=REPLY_SECONDS)
    expect(mail.locator(".mail-head")).to_contain_text("Re: Question")
    expect(mail.locator(".mail-head")).to_contain_text("default@console.invalid")
    expect(mail.locator(".mail-body")).to_contain_text("Hello **default**! You wrote:")
    expect(mail.locator(".mail-body")).to_contain_text("Does mail work?")
    screenshot(page, "chat-email")
    assert len(_runs(console_server, "email")) == 1


def test_each_conversation_keeps_one_reply_per_message(
    page: Page, console_server: ConsoleServer
) -> None:
    for kind, messages, replies in (("slack", 3, 3), ("whatsapp", 1, 2), ("email", 1, 1)):
        page.goto(f"{console_server.url}/console/chat?as={kind}")
        expect(page.locator("li.line.in")).to_have_count(messages)
        expect(page.locator("li.line.out")).to_have_count(replies)


def _wait_for_reply(server: ConsoleServer, cookie: str, kind: str, after: str) -> None:
    """Until the conversation's event stream sends a reply line after line ``after`` (a
    condition, not a sleep)."""
    with httpx.stream(
        "GET",
        f"{server.url}/console/chat/events?as={kind}&after={after}",
        headers={"Cookie": cookie},
        timeout=REPLY_SECONDS / 1000,
    ) as stream:
        assert stream.status_code == 200
        event = ""
        for text in stream.iter_lines():
            if text.startswith("event: "):
                event = text.removeprefix("event: ")
            elif text.startswith("data: ") and event == "line":
                if json.loads(text.removeprefix("data: "))["direction"] == "out":
                    return
    raise AssertionError("the stream ended before a reply")


def test_without_javascript_the_form_sends_and_the_page_shows_the_answer(
    browser: Browser, console_server: ConsoleServer, screenshot: Screenshot
) -> None:
    context = browser.new_context(
        java_script_enabled=False, viewport={"width": 1280, "height": 900}
    )
    context.set_default_timeout(10_000)
    try:
        page = context.new_page()
        page.goto(console_server.cli("console").strip().splitlines()[-1])
        page.goto(console_server.url + "/console/chat")
        page.get_by_label("Speak", exact=True).select_option(label="as an email sender")
        page.get_by_role("button", name="Switch").click()
        expect(page.get_by_role("heading", name="Speaking as an email sender")).to_be_visible()
        page.get_by_label("Message").fill("Plain HTML only")
        page.get_by_role("button", name="Send").click()
        assert page.url.endswith("/console/chat?as=email")  # post, then redirect back
        expect(page.locator("li.line.in")).to_have_count(2)
        sent = page.locator("li.line.in").last.get_attribute("data-seq") or "0"
        [session] = [c for c in context.cookies() if c["name"] == "switchboard_console"]
        cookie = f"switchboard_console={session['value']}"
        _wait_for_reply(console_server, cookie, "email", sent)
        page.reload()
        expect(page.locator("li.line.out .mail")).to_have_count(2)
        expect(page.locator("li.line.out .mail-body").nth(1)).to_contain_text("Plain HTML only")
        screenshot(page, "chat-no-js")
    finally:
        context.close()
