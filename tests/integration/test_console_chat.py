"""The console's chat tester through a real server on 127.0.0.1, on SQLite and PostgreSQL: a
message as each channel is one inbox event, one run and one reply rendered as that channel
renders it; bad input is a 4xx with a JSON ``detail``; an owner sees only its own conversation.
The built-in ``echo`` answers (``[console] chat_workflow``): its answer is the message's text."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
from sqlalchemy import select

from tests.conftest import Live
from triggers.whatsapp.tables import whatsapp_messages

CSRF = re.compile(r'data-csrf="([^"]+)"')
FORM_TOKEN = re.compile(r'name="form_token" value="([^"]+)"')


async def _signed_in(http: httpx.AsyncClient, key: str) -> str:
    """Sign ``http`` in with ``key`` through the login form; the session's CSRF token."""
    form = await http.get("/console/login")
    token = FORM_TOKEN.search(form.text)
    assert token, form.text
    answer = await http.post("/console/login", data={"form_token": token.group(1), "key": key})
    assert answer.status_code == 303, answer.text
    page = await http.get("/console/chat")
    assert page.status_code == 200, page.text
    found = CSRF.search(page.text)
    assert found, page.text
    return found.group(1)


async def _say(http: httpx.AsyncClient, csrf: str, **fields: str) -> httpx.Response:
    return await http.post("/console/chat/messages", data=fields, headers={"X-CSRF-Token": csrf})


async def _replies(http: httpx.AsyncClient, kind: str, count: int) -> list[dict[str, Any]]:
    """The first ``count`` reply lines of the conversation as ``kind``, from its event stream."""
    found: list[dict[str, Any]] = []
    async with http.stream("GET", f"/console/chat/events?as={kind}&after=0", timeout=60) as live:
        assert live.status_code == 200
        assert live.headers["Content-Type"] == "text/event-stream"
        event = ""
        async for text in live.aiter_lines():
            if text.startswith("event: "):
                event = text.removeprefix("event: ")
            elif text.startswith("data: ") and event == "line":
                line = json.loads(text.removeprefix("data: "))
                if line["direction"] == "out":
                    found.append(line)
                    if len(found) == count:
                        return found
    raise AssertionError(f"the stream ended after {found}")


async def _runs(http: httpx.AsyncClient, key: str, source: str) -> list[dict[str, Any]]:
    answer = await http.get(
        "/api/v1/runs", params={"source": source}, headers={"Authorization": f"Bearer {key}"}
    )
    assert answer.status_code == 200, answer.text
    runs: list[dict[str, Any]] = answer.json()["runs"]
    return runs


async def test_a_message_as_each_channel_makes_one_run_and_one_rendered_reply(
    live_factory: Any,
) -> None:
    live: Live = await live_factory.start(console={"chat_workflow": "echo"})
    async with httpx.AsyncClient(base_url=live.url, timeout=30) as http:
        csrf = await _signed_in(http, live.key)
        first = await _say(
            http, csrf, **{"as": "slack", "text": "Hi **there** <b>", "message_id": "m1"}
        )
        assert first.status_code == 201, first.text
        again = await _say(
            http, csrf, **{"as": "slack", "text": "Hi **there** <b>", "message_id": "m1"}
        )
        assert again.status_code == 200
        assert again.json() == {**first.json(), "duplicate": True}
        [slack] = await _replies(http, "slack", 1)
        assert "Hi <strong>there</strong> &lt;b&gt;" in slack["html"]
        assert "<b>" not in slack["html"]
        # Slack's sender swapped the :eyes: its run's start put on the message for a check.
        shown = (await http.get("/console/chat?as=slack")).text
        assert 'data-reaction="white_check_mark"' in shown
        assert 'data-reaction="eyes"' not in shown

        long = " ".join(["word"] * 500)  # 2,499 characters: two WhatsApp messages
        sent = await _say(http, csrf, **{"as": "whatsapp", "text": long, "message_id": "w1"})
        assert sent.status_code == 201, sent.text
        parts = await _replies(http, "whatsapp", 2)
        lengths = [int(re.findall(r'data-length="(\d+)"', part["html"])[0]) for part in parts]
        assert all(length <= 1600 for length in lengths), lengths
        assert "(1/2)" in parts[0]["html"] and "(2/2)" in parts[1]["html"]
        # WhatsApp's own sender sent them: its message log has both parts, from our number.
        async with live.services.database.read() as conn:
            logged = (await conn.execute(select(whatsapp_messages.c.part))).scalars().all()
        assert sorted(logged) == [0, 1]

        mail = {"as": "email", "text": "What is *new*?", "subject": "News", "message_id": "e1"}
        assert (await _say(http, csrf, **mail)).status_code == 201
        [email] = await _replies(http, "email", 1)
        assert "Re: News" in email["html"]
        assert "What is *new*?" in email["html"]  # email's text is the Markdown as written

        for source in ("slack", "whatsapp", "email"):
            [run] = await _runs(http, live.key, source)
            assert run["status"] == "completed"
        page = await http.get("/console/chat?as=slack")
        assert page.text.count('data-direction="out"') == 1
        assert page.text.count('data-direction="in"') == 1


async def test_bad_input_is_a_json_detail_and_owners_see_only_their_own(
    live_factory: Any,
) -> None:
    live: Live = await live_factory.start(console={"chat_workflow": "echo"})
    async with (
        httpx.AsyncClient(base_url=live.url, timeout=30) as http,
        httpx.AsyncClient(base_url=live.url, timeout=30) as other,
    ):
        csrf = await _signed_in(http, live.key)
        for fields, problem in [
            ({"as": "fax", "text": "hi"}, "as: one of slack, whatsapp, email"),
            ({"as": "slack", "text": "  "}, "text: type a message"),
            ({"as": "slack", "text": "x" * 20_001}, "text: at most 20000 characters"),
            ({"as": "email", "text": "hi", "message_id": "a/b"}, "message_id:"),
        ]:
            answer = await _say(http, csrf, **fields)
            assert answer.status_code == 400, answer.text
            assert answer.json()["detail"].startswith(problem)
        refused = await http.post("/console/chat/messages", data={"as": "slack", "text": "hi"})
        assert refused.status_code == 403
        assert "CSRF" in refused.json()["detail"]
        stream = await http.get("/console/chat/events?as=slack&after=x")
        assert stream.status_code == 400
        assert stream.json()["detail"] == "after: a line number"
        assert (await http.get("/console/chat?as=fax")).status_code == 400

        assert (await _say(http, csrf, **{"as": "slack", "text": "only mine"})).status_code == 201
        await _replies(http, "slack", 1)
        bob_csrf = await _signed_in(other, await live.key_for("bob"))
        theirs = await other.get("/console/chat?as=slack")
        assert "only mine" not in theirs.text
        assert "No messages yet" in theirs.text
        # A message id is the owner's own: the same one from two owners is two messages.
        for client, token in ((http, csrf), (other, bob_csrf)):
            sent = await _say(client, token, **{"as": "whatsapp", "text": "hi", "message_id": "s"})
            assert sent.status_code == 201, sent.text
        [bob] = await _replies(other, "whatsapp", 1)
        assert "hi" in bob["html"]
        mine = await http.get("/console/chat?as=slack")
        assert mine.text.count("only mine") == 2  # the message and its echo


async def test_a_plain_form_is_sent_too_and_a_suspended_tester_holds_the_message(
    live_factory: Any,
) -> None:
    live: Live = await live_factory.start(console={"chat_workflow": "echo"})
    async with httpx.AsyncClient(base_url=live.url, timeout=30) as http:
        csrf = await _signed_in(http, live.key)
        # Without the page's script: the CSRF token is a form field, the answer a redirect.
        plain = await http.post(
            "/console/chat/messages",
            data={"csrf": csrf, "as": "whatsapp", "text": "no script", "message_id": "p1"},
        )
        assert plain.status_code == 303
        assert plain.headers["Location"] == "/console/chat?as=whatsapp"
        [echo] = await _replies(http, "whatsapp", 1)
        assert "no script" in echo["html"]

        await live.services.inbox.suspend("console:slack")
        held = await _say(http, csrf, **{"as": "slack", "text": "wait", "message_id": "h1"})
        assert held.status_code == 201
        assert held.json()["held"] is True
        [event] = (
            await live.services.inbox.events(
                trigger="console:slack", status=None, limit=5, cursor=None, include_body=False
            )
        )[0]
        assert event.status.value == "held"
        await live.services.inbox.resume("console:slack")
        [reply] = await _replies(http, "slack", 1)
        assert "wait" in reply["html"]
