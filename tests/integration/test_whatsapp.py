"""WhatsApp through Twilio: signed webhooks in through real sockets, replies to a fake Twilio API.

Webhooks are signed with twilio's ``RequestValidator.compute_signature`` exactly as Twilio signs
them; replies are sent by the real twilio-python client to ``tests/fakes/twilio_api.py``.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
from collections.abc import AsyncIterator, Collection
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update
from sqlalchemy import text as sql
from twilio.request_validator import RequestValidator

from core.models import Outcome, ReplyTarget, RunRequest, Source
from dispatch.history import DeliveryFailureWriter
from dispatch.inbox_tables import inbox_events
from dispatch.tables import deliveries, runs
from switchboard.app import ROLES
from tests.conftest import Live, LiveFactory
from tests.fakes.twilio_api import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    SANDBOX_NUMBER,
    FakeTwilioApi,
    whatsapp_message_form,
)
from tests.integration.deliveries import wait_for_delivery, wait_for_rows
from triggers.whatsapp.message_log import MessageLog
from triggers.whatsapp.parse import chat_key
from triggers.whatsapp.sender import OUTSIDE_WINDOW
from triggers.whatsapp.tables import inbound_events

USER = "whatsapp:+15005550006"
OTHER_NUMBER = "whatsapp:+14155550100"
_sids = iter(range(1, 10**6))


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30) as client:
        yield client


async def start(
    live_factory: LiveFactory,
    twilio: FakeTwilioApi,
    *,
    roles: Collection[str] = ROLES,
    server: dict[str, Any] | None = None,
    **whatsapp: Any,
) -> Live:
    settings = twilio.whatsapp_section(**{"workflow": "echo", **whatsapp})
    return await live_factory.start(roles=roles, whatsapp=settings, server=server or {})


def message(body: str, *, sid: str | None = None, user: str = USER, **extra: str) -> dict[str, str]:
    """The form fields of a Twilio WhatsApp webhook (PROTOCOLS §2.1)."""
    return whatsapp_message_form(body, sid=sid or f"SM{next(_sids):032d}", user=user, **extra)


async def post_signed(
    http: httpx.AsyncClient,
    live: Live,
    params: dict[str, str],
    *,
    path: str = "/twilio/whatsapp",
    signed_url: str | None = None,
    signed_params: dict[str, str] | None = None,
) -> httpx.Response:
    url = live.url + path
    signature = RequestValidator(AUTH_TOKEN).compute_signature(
        signed_url or url, signed_params or params
    )
    return await http.post(url, data=params, headers={"X-Twilio-Signature": signature})


async def runs_made(live: Live, count: int, timeout: float = 20) -> list[dict[str, Any]]:
    """The WhatsApp runs once the inbox processed at least ``count`` messages into runs."""
    async with asyncio.timeout(timeout):
        while True:
            made = await whatsapp_runs(live)
            if len(made) >= count:
                return made
            await asyncio.sleep(0.05)  # polling the database: nothing to subscribe to here


async def stored_events(live: Live) -> list[str]:
    """The dedupe keys of the inbox events the edge stored, in arrival order."""
    async with live.services.database.read() as conn:
        query = select(inbox_events.c.dedupe_key).order_by(inbox_events.c.id)
        return [key for key in (await conn.execute(query)).scalars() if key is not None]


async def all_processed(live: Live, timeout: float = 20) -> None:
    """Until the inbox has no pending event left (every one processed, ignored or failed)."""
    query = select(func.count()).where(inbox_events.c.status == "pending")
    async with asyncio.timeout(timeout):
        while True:
            async with live.services.database.read() as conn:
                if not (await conn.execute(query)).scalar():
                    return
            await asyncio.sleep(0.05)  # polling the database: nothing to subscribe to here


async def whatsapp_runs(live: Live) -> list[dict[str, Any]]:
    async with live.services.database.read() as conn:
        rows = await conn.execute(
            select(runs).where(runs.c.source == Source.WHATSAPP.value).order_by(runs.c.id)
        )
        return [dict(row) for row in rows.mappings()]


async def test_text_message_gets_one_reply_from_the_number_it_was_sent_to(
    live_factory: LiveFactory, twilio: FakeTwilioApi, http: httpx.AsyncClient
) -> None:
    live = await start(live_factory, twilio)
    params = message("hello there", Latitude="52.37", Longitude="4.89", ButtonPayload="yes")
    params["To"] = OTHER_NUMBER
    response = await post_signed(http, live, params)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/xml")
    assert response.text.endswith("<Response/>")
    [sent] = await twilio.wait_for(1)
    assert (sent.sender, sent.to, sent.body) == (OTHER_NUMBER, USER, "hello there")
    assert sent.get("StatusCallback") == live.url + "/twilio/status"
    [run] = await runs_made(live, 1)
    inputs = json.loads(run["request_body"])
    assert inputs["channel"] == "whatsapp" and inputs["text"] == "hello there"
    assert inputs["sender"] == {"id": USER, "name": "Ann"}
    assert inputs["conversation"] == {"id": USER, "thread_id": None}
    assert inputs["event"]["Latitude"] == "52.37" and inputs["event"]["ButtonPayload"] == "yes"
    assert run["idempotency_key"] == f"whatsapp:{params['MessageSid']}"
    await wait_for_delivery(live, run["id"], "sent")
    assert len(twilio.messages) == 1


async def test_unsigned_tampered_and_wrong_url_posts_are_refused_and_not_stored(
    live_factory: LiveFactory, twilio: FakeTwilioApi, http: httpx.AsyncClient
) -> None:
    live = await start(live_factory, twilio)
    params = message("pay me")
    unsigned = await http.post(live.url + "/twilio/whatsapp", data=params)
    tampered = await post_signed(
        http, live, {**params, "Body": "pay me more"}, signed_params=params
    )
    wrong_url = await post_signed(
        http, live, params, signed_url="https://example.com/twilio/whatsapp"
    )
    wrong_status = await http.post(live.url + "/twilio/status", data={"MessageSid": "SM1"})
    for response in (unsigned, tampered, wrong_url, wrong_status):
        assert response.status_code == 403, response.text
        assert "X-Twilio-Signature" in response.json()["detail"]
    assert await whatsapp_runs(live) == []
    assert twilio.attempts == 0


async def test_a_message_twilio_sends_twice_makes_one_run_and_one_reply(
    live_factory: LiveFactory, twilio: FakeTwilioApi, http: httpx.AsyncClient
) -> None:
    live = await start(live_factory, twilio)
    params = message("once")
    for _ in range(2):
        assert (await post_signed(http, live, params)).status_code == 200
    [run] = await runs_made(live, 1)
    await wait_for_delivery(live, run["id"], "sent")
    assert [sent.body for sent in twilio.messages] == ["once"]
    assert len(await whatsapp_runs(live)) == 1
    assert await stored_events(live) == [f"whatsapp:{params['MessageSid']}"]


async def test_a_long_answer_goes_as_numbered_parts_in_order_resuming_after_a_429(
    live_factory: LiveFactory, twilio: FakeTwilioApi, http: httpx.AsyncClient
) -> None:
    live = await start(live_factory, twilio)
    sentences = [f"Sentence {n} says something **bold** about part {n}." for n in range(120)]
    text = " ".join(sentences)
    assert len(text) >= 5000
    twilio.fail_next(429, retry_after="0", after=1)  # the second part waits once
    await post_signed(http, live, message(text))
    [run] = await runs_made(live, 1)
    row = await wait_for_delivery(live, run["id"], "sent")
    assert row["attempts"] == 2
    parts = [sent.body or "" for sent in twilio.messages]
    total = len(parts)
    assert total >= 4 and twilio.attempts == total + 1
    for number, part in enumerate(parts, 1):
        assert len(part) <= 1600
        assert part.endswith(f" ({number}/{total})")
    joined = " ".join(part.rsplit(" (", 1)[0] for part in parts)
    assert joined == text.replace("**", "*")


async def test_three_quick_messages_from_one_user_run_and_are_answered_in_order(
    live_factory: LiveFactory, twilio: FakeTwilioApi, http: httpx.AsyncClient
) -> None:
    live = await start(live_factory, twilio, workflow="whatsapp-bot")
    await live.register("whatsapp_bot")
    texts = ["sleep 1 first", "sleep 0 second", "sleep 0 third"]
    for text in texts:
        assert (await post_signed(http, live, message(text))).status_code == 200
    sent = await twilio.wait_for(3, timeout=60)
    assert [m.body for m in sent] == texts
    ran = await runs_made(live, 3)
    assert [json.loads(r["request_body"])["text"] for r in ran] == texts
    for earlier, later in itertools.pairwise(ran):
        assert later["started_at"] >= earlier["completed_at"]


async def test_media_is_downloaded_with_basic_auth_and_handed_on_as_a_signed_url(
    live_factory: LiveFactory, twilio: FakeTwilioApi, http: httpx.AsyncClient
) -> None:
    live = await start(live_factory, twilio, workflow="whatsapp-bot")
    await live.register("whatsapp_bot")
    picture = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40
    params = message(
        "",
        NumMedia="1",
        MessageType="image",
        MediaUrl0=twilio.add_media(picture, "image/png"),
        MediaContentType0="image/png",
    )
    assert (await post_signed(http, live, params)).status_code == 200
    [sent] = await twilio.wait_for(1, timeout=60)
    digest = hashlib.sha256(picture).hexdigest()
    assert sent.body == f"media-0.png {len(picture)} {digest}"
    [run] = await runs_made(live, 1)
    [attachment] = json.loads(run["request_body"])["attachments"]
    assert attachment["content_type"] == "image/png" and attachment["size"] == len(picture)
    assert attachment["url"].startswith(live.url + "/files/")
    assert [path.split("/")[1] for path in twilio.media_fetches] == ["2010-04-01", "cdn"]


async def test_media_that_cannot_be_fetched_does_not_cost_the_message(
    live_factory: LiveFactory, twilio: FakeTwilioApi, http: httpx.AsyncClient
) -> None:
    live = await start(live_factory, twilio)
    missing = twilio.add_media(b"x", "image/jpeg").rsplit("/", 1)[0] + "/MEnothere"
    params = message("look", NumMedia="1", MediaUrl0=missing, MediaContentType0="image/jpeg")
    assert (await post_signed(http, live, params)).status_code == 200
    [run] = await runs_made(live, 1)
    await wait_for_delivery(live, run["id"], "sent")
    [run] = await runs_made(live, 1)
    inputs = json.loads(run["request_body"])
    assert inputs["attachments"] == []
    assert "answered 404" in inputs["event"]["media_errors"][0]
    [sent] = twilio.messages
    assert sent.body == "look"


def image(twilio: FakeTwilioApi, picture: bytes, **extra: str) -> dict[str, str]:
    return message(
        "",
        NumMedia="1",
        MessageType="image",
        MediaUrl0=twilio.add_media(picture, "image/png"),
        MediaContentType0="image/png",
        **extra,
    )


def api_fetches(twilio: FakeTwilioApi) -> int:
    """Requests to Twilio's media resource (each download starts with one)."""
    return sum(path.startswith("/2010-04-01/") for path in twilio.media_fetches)


async def test_media_does_not_hold_up_the_ack_nor_jump_the_chat_queue(
    live_factory: LiveFactory, twilio: FakeTwilioApi, http: httpx.AsyncClient
) -> None:
    # A node that accepts messages but processes nothing: the ack path alone.
    web_node = await start(live_factory, twilio, roles={"web"}, media_timeout=30)
    gate = twilio.hold_media()
    picture = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8
    photo = image(twilio, picture, Body="look at this")
    async with asyncio.timeout(5):  # the picture, Twilio's retry of it, then a text
        for params in (photo, photo, message("and this text")):
            assert (await post_signed(http, web_node, params)).status_code == 200
    assert twilio.media_fetches == []  # the ack path downloads nothing
    assert await whatsapp_runs(web_node) == []
    worker_node = await start(live_factory, twilio, roles={"worker"})
    await twilio.wait_for_media_fetches(1)
    # The text arrived second: it waits for the picture's download, in the chat's order.
    assert await whatsapp_runs(worker_node) == []
    gate.set()
    replies = await twilio.wait_for(2, timeout=60)
    assert [sent.body for sent in replies] == ["look at this", "and this text"]
    picture_run, text_run = await whatsapp_runs(worker_node)
    assert picture_run["idempotency_key"] == f"whatsapp:{photo['MessageSid']}"
    assert text_run["started_at"] >= picture_run["completed_at"]
    [attachment] = json.loads(picture_run["request_body"])["attachments"]
    assert attachment["size"] == len(picture)
    assert api_fetches(twilio) == 1
    assert len(twilio.messages) == 2


async def test_a_restart_while_media_downloads_loses_no_message(
    live_factory: LiveFactory, twilio: FakeTwilioApi, http: httpx.AsyncClient
) -> None:
    first = await start(live_factory, twilio, workflow="whatsapp-bot")
    await first.register("whatsapp_bot")
    gate = twilio.hold_media()
    picture = b"GIF89a" + bytes(range(200))
    async with asyncio.timeout(5):
        assert (await post_signed(http, first, image(twilio, picture))).status_code == 200
    await twilio.wait_for_media_fetches(1)
    await live_factory.stop(first)  # the download is interrupted; the event stays in the inbox
    assert await whatsapp_runs(first) == []
    gate.set()
    second = await start(live_factory, twilio, workflow="whatsapp-bot")
    [sent] = await twilio.wait_for(1, timeout=60)
    assert sent.body == f"media-0.png {len(picture)} {hashlib.sha256(picture).hexdigest()}"
    [run] = await whatsapp_runs(second)
    assert run["status"] == "completed"
    assert api_fetches(twilio) == 2


async def test_outside_the_window_the_template_is_sent_instead(
    live_factory: LiveFactory, twilio: FakeTwilioApi, http: httpx.AsyncClient
) -> None:
    live = await start(
        live_factory,
        twilio,
        template_sid="HX" + "1" * 32,
        template_variables={"1": "{text}", "2": "{run_id}"},
    )
    # The user wrote 25 hours ago: the window has closed since.
    await post_signed(http, live, message("remember me"))
    [earlier] = await runs_made(live, 1)
    await wait_for_delivery(live, earlier["id"], "sent")
    async with live.services.database.write() as conn:
        await conn.execute(
            update(runs)
            .where(runs.c.id == earlier["id"])
            .values(created_at=live.services.clock.now() - timedelta(hours=25))
        )
    # A message nobody asked for (a schedule's): to the user, from the configured number.
    submitted = await live.services.gateway.submit(
        RunRequest(
            owner_id="default",
            service_id="echo",
            body=json.dumps("Your *daily* report {is} ready"),
            reply_target=ReplyTarget(channel="whatsapp", address=USER),
        )
    )
    await wait_for_delivery(live, submitted.id, "sent")
    free_form, template = await twilio.wait_for(2)
    assert free_form.body == "remember me"
    assert template.body is None and template.media_urls == []
    assert (template.sender, template.to) == (SANDBOX_NUMBER, USER)
    assert template.get("ContentSid") == "HX" + "1" * 32
    variables = json.loads(template.get("ContentVariables") or "")
    assert variables == {"1": "Your _daily_ report {is} ready", "2": submitted.id}


async def test_outside_the_window_without_a_template_the_delivery_fails_clearly(
    live_factory: LiveFactory, twilio: FakeTwilioApi
) -> None:
    live = await start(live_factory, twilio)
    submitted = await live.services.gateway.submit(
        RunRequest(
            owner_id="default",
            service_id="echo",
            body=json.dumps("unsolicited"),
            reply_target=ReplyTarget(channel="whatsapp", address=USER),
        )
    )
    row = await wait_for_delivery(live, submitted.id, "failed")
    assert row["last_error"] == OUTSIDE_WINDOW
    assert twilio.attempts == 0


async def test_twilio_client_errors_fail_the_delivery_with_code_and_message(
    live_factory: LiveFactory, twilio: FakeTwilioApi, http: httpx.AsyncClient
) -> None:
    live = await start(live_factory, twilio)
    twilio.fail_next(400, code=21211, message="Invalid 'To' Phone Number")
    await post_signed(http, live, message("hi"))
    [run] = await runs_made(live, 1)
    row = await wait_for_delivery(live, run["id"], "failed")
    assert row["last_error"] == "Twilio error 21211: Invalid 'To' Phone Number"
    assert row["attempts"] == 1


async def test_status_callbacks_move_a_message_forward_only(
    live_factory: LiveFactory, twilio: FakeTwilioApi, http: httpx.AsyncClient
) -> None:
    live = await start(live_factory, twilio)
    await post_signed(http, live, message("track me"))
    [run] = await runs_made(live, 1)
    row = await wait_for_delivery(live, run["id"], "sent")
    [sent] = await twilio.wait_for(1)
    for status in ("sent", "read", "delivered", "sent"):  # the last two arrive late
        callback = {
            "MessageSid": sent.sid,
            "MessageStatus": status,
            "AccountSid": ACCOUNT_SID,
            "From": SANDBOX_NUMBER,
            "To": USER,
            "ChannelPrefix": "whatsapp",
        }
        response = await post_signed(http, live, callback, path="/twilio/status")
        assert response.status_code == 204
    await all_processed(live)
    log = MessageLog(
        live.services.database,
        live.services.clock,
        DeliveryFailureWriter(live.services.clock),
    )
    [recorded] = await log.of_delivery(row["id"])
    assert (recorded["sid"], recorded["status"], recorded["part"]) == (sent.sid, "read", 0)
    failure = {"MessageSid": sent.sid, "MessageStatus": "undelivered", "ErrorCode": "63016"}
    await post_signed(http, live, failure, path="/twilio/status")
    await all_processed(live)
    [recorded] = await log.of_delivery(row["id"])
    assert (recorded["status"], recorded["error_code"]) == ("undelivered", "63016")
    # The delivery shows it too (API, CLI): it was sent, but it did not arrive.
    row = await wait_for_delivery(live, run["id"], "failed")
    assert (
        row["last_error"] == f"WhatsApp message {sent.sid} (part 1) undelivered: Twilio error 63016"
    )


async def test_status_callbacks_that_arrive_before_the_message_is_recorded_are_kept(
    live_factory: LiveFactory, twilio: FakeTwilioApi, http: httpx.AsyncClient
) -> None:
    # Twilio calls back while our create call is still waiting for its answer.
    twilio.early_statuses = ["sent", "delivered", "sending"]
    live = await start(live_factory, twilio)
    await post_signed(http, live, message("fast"))
    [run] = await runs_made(live, 1)
    row = await wait_for_delivery(live, run["id"], "sent")
    assert twilio.callback_answers == [204, 204, 204]
    [sent] = twilio.messages
    log = MessageLog(
        live.services.database,
        live.services.clock,
        DeliveryFailureWriter(live.services.clock),
    )
    [recorded] = await log.of_delivery(row["id"])
    assert (recorded["sid"], recorded["status"]) == (sent.sid, "delivered")
    async with live.services.database.read() as conn:
        left = (await conn.execute(select(func.count()).select_from(inbound_events))).scalar()
    assert left == 0  # merged, then forgotten
    # A status for a message nobody sent is kept, and applies once such a message is recorded.
    assert await log.apply_status("SM" + "f" * 32, "read", None)
    await log.record_sent(row["id"], 1, "SM" + "f" * 32, "queued")
    assert [m["status"] for m in await log.of_delivery(row["id"])] == ["delivered", "read"]


async def test_behind_a_proxy_signatures_cover_the_public_url_and_its_query(
    live_factory: LiveFactory, twilio: FakeTwilioApi, http: httpx.AsyncClient
) -> None:
    public = "https://hooks.example.test"
    live = await start(live_factory, twilio, roles={"web"}, server={"public_url": public})
    path = "/twilio/whatsapp?q=1"
    params = message("via the proxy")
    socket_signed = await post_signed(http, live, params, path=path, signed_url=live.url + path)
    assert socket_signed.status_code == 403, socket_signed.text
    assert await stored_events(live) == []
    proxy_signed = await post_signed(http, live, params, path=path, signed_url=public + path)
    assert proxy_signed.status_code == 200, proxy_signed.text
    assert await stored_events(live) == [f"whatsapp:{params['MessageSid']}"]

    path = "/twilio/status?q=1"
    callback = {"MessageSid": "SM" + "e" * 32, "MessageStatus": "delivered"}
    socket_signed = await post_signed(http, live, callback, path=path, signed_url=live.url + path)
    assert socket_signed.status_code == 403, socket_signed.text
    assert len(await stored_events(live)) == 1
    proxy_signed = await post_signed(http, live, callback, path=path, signed_url=public + path)
    assert proxy_signed.status_code == 204, proxy_signed.text
    assert (await stored_events(live))[1:] == [f"whatsapp:SM{'e' * 32}:delivered"]


async def test_a_restart_between_run_and_delivery_sends_exactly_one_reply(
    live_factory: LiveFactory, twilio: FakeTwilioApi, http: httpx.AsyncClient
) -> None:
    # A node that accepts messages but neither executes nor delivers: the run is completed by
    # hand, as a worker would, and the node "crashes" before any outbox drained.
    web_node = await start(live_factory, twilio, roles={"web"})
    services = web_node.services
    await services.gateway.submit(  # the run the inbox processor makes of a message
        RunRequest(
            owner_id="default",
            service_id="echo",
            body=json.dumps("survive"),
            source=Source.WHATSAPP,
            reply_target=ReplyTarget(
                channel="whatsapp", address=USER, details={"from": SANDBOX_NUMBER}
            ),
            serial_key=chat_key(SANDBOX_NUMBER, USER),
        )
    )
    [run] = await services.queue.claim("worker-a", 1)
    done = Outcome.from_response(200, json.dumps({"text": "survived"}).encode(), None)
    assert await services.queue.complete(
        "worker-a", run.id, done, lambda now: services.replies.row(run, done, now)
    )
    assert twilio.messages == []
    # The restarted service (worker role: outbox and senders) on the same database.
    worker_node = await start(live_factory, twilio, roles={"worker"})
    await wait_for_delivery(worker_node, run.id, "sent")
    assert await worker_node.services.outbox.drain_once() == 0
    assert [sent.body for sent in twilio.messages] == ["survived"]
    async with worker_node.services.database.read() as conn:
        count = (await conn.execute(select(func.count()).select_from(deliveries))).scalar()
    assert count == 1


async def test_a_5xx_from_twilio_is_retried_until_it_goes_through(
    live_factory: LiveFactory, twilio: FakeTwilioApi, http: httpx.AsyncClient
) -> None:
    live = await start(live_factory, twilio)
    twilio.fail_next(503, message="Service Unavailable")
    await post_signed(http, live, message("try again"))
    [run] = await runs_made(live, 1)
    row = await wait_for_delivery(live, run["id"], "sent")
    assert row["attempts"] == 2 and twilio.attempts == 2
    assert [sent.body for sent in twilio.messages] == ["try again"]


async def test_a_failed_run_is_answered_with_one_short_line_naming_it(
    live_factory: LiveFactory, twilio: FakeTwilioApi, http: httpx.AsyncClient
) -> None:
    live = await start(live_factory, twilio, workflow="fail")
    await live.register("fail")
    await post_signed(http, live, message("do the thing"))
    [run] = await runs_made(live, 1)
    await wait_for_delivery(live, run["id"], "sent", timeout=60)
    [sent] = twilio.messages
    assert sent.body == f"Sorry, that did not work (run {run['id']} failed)."
    assert "boom" not in (sent.body or "") and "\n" not in (sent.body or "")


async def test_reply_attachments_go_one_media_url_per_message_after_the_text(
    live_factory: LiveFactory, twilio: FakeTwilioApi, http: httpx.AsyncClient
) -> None:
    files = ["https://files.example.test/a.png", "https://files.example.test/b.pdf"]
    # echo answers with its inputs: the route's fixed `reply` is the workflow's answer.
    route = {
        "keyword": "files",
        "workflow": "echo",
        "inputs": {"reply": {"text": "two files", "attachments": files}},
    }
    live = await start(live_factory, twilio, routes=[route])
    await post_signed(http, live, message("files please"))
    [run] = await runs_made(live, 1)
    await wait_for_delivery(live, run["id"], "sent")
    assert [(sent.body, sent.media_urls) for sent in twilio.messages] == [
        ("two files", []),
        (None, files[:1]),
        (None, files[1:]),
    ]


async def test_messages_are_routed_by_keyword_and_by_receiving_number(
    live_factory: LiveFactory, twilio: FakeTwilioApi, http: httpx.AsyncClient
) -> None:
    routes = [
        {"to": OTHER_NUMBER, "workflow": "echo", "inputs": {"desk": "sales"}},
        {"keyword": "report", "workflow": "echo", "inputs": {"desk": "reports"}},
    ]
    live = await start(live_factory, twilio, routes=routes)
    cases = {
        "whatsapp:+15005550001": ("Report: weekly numbers", SANDBOX_NUMBER),
        "whatsapp:+15005550002": ("reporting for duty", SANDBOX_NUMBER),
        "whatsapp:+15005550003": ("report on sales", OTHER_NUMBER),
    }
    for user, (body, to) in cases.items():
        params = message(body, user=user)
        params["To"] = to
        assert (await post_signed(http, live, params)).status_code == 200
    await twilio.wait_for(3)
    routed = {}
    for run in await whatsapp_runs(live):
        inputs = json.loads(run["request_body"])
        routed[inputs["sender"]["id"]] = (inputs["text"], inputs.get("desk"))
        await wait_for_delivery(live, run["id"], "sent")
    assert routed == {
        "whatsapp:+15005550001": ("weekly numbers", "reports"),
        "whatsapp:+15005550002": ("reporting for duty", None),
        "whatsapp:+15005550003": ("report on sales", "sales"),
    }
    replies = {sent.to: (sent.sender, sent.body) for sent in twilio.messages}
    assert replies == {
        "whatsapp:+15005550001": (SANDBOX_NUMBER, "weekly numbers"),
        "whatsapp:+15005550002": (SANDBOX_NUMBER, "reporting for duty"),
        "whatsapp:+15005550003": (OTHER_NUMBER, "report on sales"),
    }


@pytest.mark.parametrize("template", [True, False], ids=["template", "no-template"])
async def test_a_window_that_closes_between_parts_is_not_skipped_silently(
    live_factory: LiveFactory, twilio: FakeTwilioApi, http: httpx.AsyncClient, template: bool
) -> None:
    settings: dict[str, Any] = {"template_sid": "HX" + "2" * 32} if template else {}
    live = await start(live_factory, twilio, **settings)
    text = " ".join(f"Sentence {n} is here to make the answer long." for n in range(100))
    twilio.fail_next(429, retry_after="3600", after=1)  # part 2 waits; the window closes
    await post_signed(http, live, message(text))
    [run] = await runs_made(live, 1)
    rows = await wait_for_rows(
        live, lambda row: row["attempts"] == 1 and row["status"] == "pending"
    )
    assert rows[0]["progress"] == 1
    async with live.services.database.write() as conn:
        await conn.execute(
            update(runs)
            .where(runs.c.id == run["id"])
            .values(created_at=live.services.clock.now() - timedelta(hours=25))
        )
        await conn.execute(update(deliveries).values(next_attempt_at=live.services.clock.now()))
    live.services.outbox.wake()
    if template:
        row = await wait_for_delivery(live, run["id"], "sent")
        first, stand_in = twilio.messages
        assert first.body is not None and first.body.endswith("(1/3)")
        assert stand_in.body is None and stand_in.get("ContentSid") == "HX" + "2" * 32
        assert row["progress"] == 2
    else:
        row = await wait_for_delivery(live, run["id"], "failed")
        assert row["last_error"] == (
            "WhatsApp's 24-hour window closed after 1 of the reply's 3 messages were sent; "
            "the rest was not sent and no template is configured"
        )
        assert len(twilio.messages) == 1


async def test_a_duplicate_written_concurrently_by_another_node_is_answered_as_one(
    live_factory: LiveFactory, twilio: FakeTwilioApi, http: httpx.AsyncClient
) -> None:
    live = await start(live_factory, twilio, roles={"web"})
    database = live.services.database
    if database.is_sqlite:
        pytest.skip("SQLite has one writer: the check and the insert cannot interleave")
    params = message("twice at once")
    key = f"whatsapp:{params['MessageSid']}"
    now = live.services.clock.now()
    # "Another node" has stored the same message in the inbox and not committed yet.
    async with database.engine.connect() as other:
        transaction = await other.begin()
        await other.execute(
            inbox_events.insert().values(
                id="evt_other_node",
                trigger="whatsapp",
                dedupe_key=key,
                ordering_key=chat_key(SANDBOX_NUMBER, USER),
                status="pending",
                received_at=now,
                headers={},
                body=b"",
                attempts=0,
            )
        )
        posting = asyncio.ensure_future(post_signed(http, live, params))
        await wait_for_a_lock_waiter(live)
        await transaction.commit()
    response = await posting
    assert response.status_code == 200, response.text
    async with database.read() as conn:
        query = select(inbox_events.c.id).where(inbox_events.c.dedupe_key == key)
        assert list((await conn.execute(query)).scalars()) == ["evt_other_node"]


async def wait_for_a_lock_waiter(live: Live) -> None:
    """Until some PostgreSQL backend waits for a lock (our insert, on the other's row)."""
    query = sql("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")
    async with asyncio.timeout(10):
        while True:
            # A fresh transaction each time: statistics views are a snapshot per transaction.
            async with live.services.database.read() as probe:
                if (await probe.execute(query)).scalar():
                    return
            await asyncio.sleep(0.02)  # polling the server: nothing to subscribe to
