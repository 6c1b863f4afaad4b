"""The WhatsApp edge and processor against the in-memory inbox: real HTTP, real signatures.

The edge is mounted at ``/twilio`` under an app with the server's error middleware and served on
127.0.0.1; posts are signed with twilio's ``RequestValidator`` as Twilio signs them. The
processor is run over what the edge stored, as the inbox processor would (MemoryInbox).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from twilio.request_validator import RequestValidator

from core.clock import isoformat
from core.inbox import Ignored
from core.models import RunRequest
from core.ports import NullMetrics
from dispatch.inbox_memory import MemoryInbox
from switchboard.http import error_middleware
from tests.conftest import free_port
from tests.fakes.twilio_api import ACCOUNT_SID, AUTH_TOKEN, SANDBOX_NUMBER, whatsapp_message_form
from triggers.whatsapp.edge import EMPTY_TWIML, PREFIX, TwilioSignature, WhatsAppEdge
from triggers.whatsapp.media import MediaFetcher
from triggers.whatsapp.message_log import MessageLog
from triggers.whatsapp.process import WhatsAppProcessor
from triggers.whatsapp.settings import WhatsAppSettings

USER = "whatsapp:+15005550006"
OTHER_USER = "whatsapp:+15005550007"


@dataclass
class Edge:
    url: str
    inbox: MemoryInbox
    http: httpx.AsyncClient

    async def post(
        self, path: str, params: dict[str, str], *, signed: dict[str, str] | None = None
    ) -> httpx.Response:
        url = self.url + path
        signature = RequestValidator(AUTH_TOKEN).compute_signature(url, signed or params)
        return await self.http.post(url, data=params, headers={"X-Twilio-Signature": signature})


@pytest.fixture
async def edge() -> AsyncIterator[Edge]:
    inbox = MemoryInbox()
    port = free_port()  # known before the app is built: the signature covers the public URL
    url = f"http://127.0.0.1:{port}"
    root = web.Application(middlewares=[error_middleware(NullMetrics())])
    root.add_subapp(PREFIX, WhatsAppEdge(inbox, TwilioSignature(AUTH_TOKEN, url)).app())
    server = TestServer(root, host="127.0.0.1", port=port)
    await server.start_server()
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            yield Edge(url, inbox, http)
    finally:
        await server.close()


def message(body: str, sid: str, *, user: str = USER, **extra: str) -> dict[str, str]:
    return whatsapp_message_form(body, sid=sid, user=user, **extra)


def status(sid: str, value: str, **extra: str) -> dict[str, str]:
    return {"MessageSid": sid, "MessageStatus": value, "AccountSid": ACCOUNT_SID, **extra}


async def test_a_signed_message_is_stored_raw_with_its_keys_and_answered_with_empty_twiml(
    edge: Edge,
) -> None:
    params = message("hello", "SM" + "1" * 32)
    response = await edge.post("/twilio/whatsapp", params)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/xml")
    assert response.text == EMPTY_TWIML
    [stored] = [entry.event for entry in edge.inbox.entries]
    assert stored.trigger == "whatsapp"
    assert stored.dedupe_key == "whatsapp:SM" + "1" * 32
    assert stored.ordering_key == "whatsapp:+14155238886:+15005550006"
    assert httpx.QueryParams(stored.body.decode()) == httpx.QueryParams(params)


async def test_a_retry_is_answered_like_the_first_and_stored_once(edge: Edge) -> None:
    params = message("once", "SM" + "2" * 32)
    answers = [await edge.post("/twilio/whatsapp", params) for _ in range(3)]
    assert [(a.status_code, a.text) for a in answers] == [(200, EMPTY_TWIML)] * 3
    assert len(edge.inbox.entries) == 1


async def test_chats_get_their_own_ordering_keys(edge: Edge) -> None:
    await edge.post("/twilio/whatsapp", message("a", "SM" + "3" * 32))
    await edge.post("/twilio/whatsapp", message("b", "SM" + "4" * 32, user=OTHER_USER))
    await edge.post("/twilio/whatsapp", message("c", "SM" + "5" * 32))
    keys = [entry.event.ordering_key for entry in edge.inbox.entries]
    assert keys[0] == keys[2] != keys[1]


async def test_each_status_transition_is_stored_once_keyed_by_the_message(edge: Edge) -> None:
    sid = "SM" + "6" * 32
    for value in ("sent", "delivered", "sent", "read"):
        response = await edge.post("/twilio/status", status(sid, value))
        assert response.status_code == 204
    stored = [entry.event for entry in edge.inbox.entries]
    assert [event.dedupe_key for event in stored] == [
        f"whatsapp:{sid}:sent",
        f"whatsapp:{sid}:delivered",
        f"whatsapp:{sid}:read",
    ]
    assert {event.ordering_key for event in stored} == {f"whatsapp:{sid}"}


@pytest.mark.parametrize("path", ["/twilio/whatsapp", "/twilio/status"])
async def test_unsigned_and_tampered_posts_are_refused_and_not_stored(
    edge: Edge, path: str
) -> None:
    params = message("pay me", "SM" + "7" * 32, MessageStatus="sent")
    unsigned = await edge.http.post(edge.url + path, data=params)
    tampered = await edge.post(path, {**params, "Body": "pay me more"}, signed=params)
    for response in (unsigned, tampered):
        assert response.status_code == 403, response.text
        assert "X-Twilio-Signature" in response.json()["detail"]
    assert edge.inbox.entries == []


async def test_a_signed_post_that_is_not_a_message_is_a_400_naming_the_fields(
    edge: Edge,
) -> None:
    response = await edge.post("/twilio/whatsapp", {"Body": "hi", "From": USER})
    assert response.status_code == 400
    assert "MessageSid, From and To" in response.json()["detail"]
    assert edge.inbox.entries == []


def settings(**overrides: Any) -> WhatsAppSettings:
    return WhatsAppSettings.model_validate(
        {"account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN, "workflow": "echo", **overrides}
    )


def processor(whatsapp: WhatsAppSettings) -> WhatsAppProcessor:
    """No media and no status in these tests: the fetcher and the log are never reached."""
    unused: Any = None
    fetcher = MediaFetcher(
        unused,
        unused,
        account_sid=ACCOUNT_SID,
        auth_token=AUTH_TOKEN,
        owner_id=whatsapp.owner,
        timeout=1,
        api_url=whatsapp.api_url,
    )
    owners: list[str] = []

    async def ensure_owner(owner: str) -> None:
        owners.append(owner)

    return WhatsAppProcessor(whatsapp, fetcher, MessageLog(unused, unused, unused), ensure_owner)


async def test_processing_makes_one_run_per_message_in_chat_order_with_its_keys(
    edge: Edge,
) -> None:
    sids = ["SM" + str(n) * 32 for n in (1, 2, 3)]
    for sid, text in zip(sids, ["first", "second", "third"], strict=True):
        await edge.post("/twilio/whatsapp", message(text, sid))
    await edge.post("/twilio/whatsapp", message("first", sids[0]))  # Twilio's retry
    await edge.inbox.process_pending({"whatsapp": processor(settings())})
    requests: list[RunRequest] = edge.inbox.run_requests()
    assert [json.loads(r.body or "")["text"] for r in requests] == ["first", "second", "third"]
    assert [r.idempotency_key for r in requests] == [f"whatsapp:{sid}" for sid in sids]
    assert {r.serial_key for r in requests} == {"whatsapp:+14155238886:+15005550006"}
    target = requests[0].reply_target
    assert target is not None and target.address == USER
    assert target.details == {"from": SANDBOX_NUMBER, "message_sid": sids[0]}
    inputs = json.loads(requests[0].body or "")
    assert inputs["received_at"] == isoformat(edge.inbox.entries[0].event.received_at)


async def test_a_message_no_route_takes_is_ignored_with_the_reason(edge: Edge) -> None:
    await edge.post("/twilio/whatsapp", message("hi", "SM" + "8" * 32))
    await edge.inbox.process_pending({"whatsapp": processor(settings(workflow=None))})
    [entry] = edge.inbox.entries
    assert isinstance(entry.result, Ignored)
    assert "[whatsapp] workflow is not set" in entry.result.reason
    assert edge.inbox.run_requests() == []
