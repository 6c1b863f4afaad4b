"""The server fetches or posts only where it should (issue 11, "the server fetches URLs that
callers choose"): webhook targets must be public addresses (checked when stored and again at
connect time), reply attachments are read from our file store, and provider credentials go only
to the provider's hosts. "Not reached" is proven by a loopback listener that records every
connection it gets."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from twilio.request_validator import RequestValidator

from core.addresses import is_public_address
from core.models import ReplyTarget, RunRequest, Source
from dispatch.tables import runs
from tests.conftest import Live, LiveFactory
from tests.fakes.slack_api import BOT_USER_ID, SlackApi, signed_headers
from tests.fakes.twilio_api import (
    AUTH_TOKEN,
    FakeTwilioApi,
    whatsapp_message_form,
)
from tests.integration.deliveries import wait_for_delivery
from tests.integration.test_slack import settled

SLACK_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
PUBLIC_ONLY: dict[str, Any] = {"allow_hosts": []}


@dataclass
class Listener:
    """A TCP listener on 127.0.0.1 that answers HTTP 200 and records what reached it."""

    port: int = 0
    requests: list[bytes] = field(default_factory=list)

    def url(self, path: str = "/hook", host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            self.requests.append(await reader.readuntil(b"\r\n\r\n"))
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            self.requests.append(b"")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\nsecret")
        await writer.drain()
        writer.close()


@pytest.fixture
async def listener() -> AsyncIterator[Listener]:
    target = Listener()
    server = await asyncio.start_server(target._serve, "127.0.0.1", 0)
    target.port = server.sockets[0].getsockname()[1]
    async with server:
        yield target


def bearer(live: Live) -> dict[str, str]:
    return {"Authorization": f"Bearer {live.key}"}


async def submit(live: Live, target: ReplyTarget, body: object) -> str:
    """An echo run whose reply goes to ``target`` (what a stored schedule or trigger makes)."""
    submitted = await live.services.gateway.submit(
        RunRequest(
            owner_id="default", service_id="echo", body=json.dumps(body), reply_target=target
        )
    )
    return submitted.id


# --- webhook targets ---------------------------------------------------------------------------


async def test_a_schedule_aimed_at_a_non_public_address_is_refused_and_not_stored(
    live_factory: LiveFactory, listener: Listener
) -> None:
    live = await live_factory.start(delivery=PUBLIC_ONLY)
    refused = [
        listener.url(),
        f"http://[::1]:{listener.port}/hook",
        f"http://0.0.0.0:{listener.port}/hook",
        f"http://2130706433:{listener.port}/hook",
        f"http://localhost:{listener.port}/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.1.2.3/hook",
        "http://100.64.0.1/hook",
        "https://user:pass@example.com/hook",
        "https://example.com/hook\r\nX-Injected: yes",
    ]
    async with httpx.AsyncClient(base_url=live.url, headers=bearer(live)) as http:
        for index, url in enumerate(refused):
            answer = await http.post(
                "/schedules",
                json={
                    "id": f"s{index}",
                    "service_id": "echo",
                    "cron": "0 0 1 1 *",
                    "deliver_to": f"webhook:{url}",
                },
            )
            assert answer.status_code == 400, (url, answer.text)
            assert "deliver_to" in answer.json()["detail"], url
        listed = await http.get("/schedules")
        assert listed.status_code == 200 and listed.json()["schedules"] == []
        # The built-in a workflow calls with its run key says the same.
        built_in = await http.post(
            "/run/schedule_runs",
            json={"service_id": "echo", "cron": "0 0 1 1 *", "deliver_to": f"webhook:{refused[0]}"},
        )
        assert built_in.status_code == 400, built_in.text
        assert built_in.json()["detail"].startswith("deliver_to: 127.0.0.1 is not a public")
        assert (await http.get("/schedules")).json()["schedules"] == []
    assert listener.requests == []


async def test_a_stored_webhook_target_on_loopback_fails_at_once_without_a_connection(
    live_factory: LiveFactory, listener: Listener
) -> None:
    live = await live_factory.start(delivery=PUBLIC_ONLY)
    run_id = await submit(live, ReplyTarget(channel="webhook", address=listener.url()), {"a": 1})
    row = await wait_for_delivery(live, run_id, "failed")
    assert row["attempts"] == 1  # no retry can change the answer
    assert "not a public address" in row["last_error"]
    assert listener.requests == []


def local_name(*, loopback: bool = False) -> str:
    """A host name (not ``localhost``) this machine resolves, through /etc/hosts, only to
    addresses that are not public (``loopback``: only to loopback): its own name, usually."""
    for name in (socket.gethostname(), "ip6-localhost", "ip6-loopback"):
        try:
            infos = socket.getaddrinfo(name, 80, type=socket.SOCK_STREAM)
        except OSError:
            continue
        addresses = {ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos}
        wanted = (
            all(address.version == 4 and address.is_loopback for address in addresses)
            if loopback
            else not any(map(is_public_address, addresses))
        )
        if name != "localhost" and wanted:
            return name
    pytest.skip("no host name but localhost resolves to a local address here")


async def test_a_name_resolving_to_a_local_address_at_send_time_is_refused_on_connect(
    live_factory: LiveFactory, listener: Listener
) -> None:
    """No DNS when the target is stored (the answer may change); the addresses the name has when
    the delivery connects are checked, and only those are connected to."""
    live = await live_factory.start(delivery=PUBLIC_ONLY)
    url = listener.url(host=local_name())
    async with httpx.AsyncClient(base_url=live.url, headers=bearer(live)) as http:
        created = await http.post(
            "/schedules",
            json={
                "id": "rebound",
                "service_id": "echo",
                "cron": "0 0 1 1 *",
                "paused": True,
                "inputs": {"reply": "data"},
                "deliver_to": f"webhook:{url}",
            },
        )
        assert created.status_code == 201, created.text
        ran = await http.post("/schedules/rebound/run-now")
        assert ran.status_code == 202, ran.text
    async with live.services.database.read() as conn:
        [run_id] = (await conn.execute(select(runs.c.id))).scalars()
    row = await wait_for_delivery(live, run_id, "failed")
    assert "resolves to" in row["last_error"], row["last_error"]
    assert "not a public address" in row["last_error"]
    assert row["attempts"] == 1
    assert listener.requests == []


async def test_an_allow_listed_range_is_delivered_to(
    live_factory: LiveFactory, listener: Listener
) -> None:
    live = await live_factory.start(delivery={"allow_hosts": ["127.0.0.0/8"]})
    run_id = await submit(live, ReplyTarget(channel="webhook", address=listener.url()), {"a": 1})
    await wait_for_delivery(live, run_id, "sent")
    [request] = listener.requests
    assert request.startswith(b"POST /hook HTTP/1.1")


async def test_an_allow_listed_name_is_delivered_to_whatever_it_resolves_to(
    live_factory: LiveFactory, listener: Listener
) -> None:
    name = local_name(loopback=True)  # the listener is on 127.0.0.1
    live = await live_factory.start(delivery={"allow_hosts": [name]})
    url = listener.url(host=name)
    run_id = await submit(live, ReplyTarget(channel="webhook", address=url), {"a": 1})
    row = await wait_for_delivery(live, run_id, "sent")
    assert row["attempts"] == 1
    assert len(listener.requests) == 1


# --- Slack ---------------------------------------------------------------------------------------


async def start_slack(live_factory: LiveFactory, fake: SlackApi, **roles: Any) -> Live:
    return await live_factory.start(
        roles=roles.get("roles", {"web", "worker"}),
        slack=fake.slack_section(SLACK_SECRET, workflow="echo"),
        delivery=PUBLIC_ONLY,
    )


async def test_reply_attachments_that_are_not_our_files_become_links_and_are_never_fetched(
    live_factory: LiveFactory, slack: SlackApi, listener: Listener
) -> None:
    live = await start_slack(live_factory, slack)
    _, ours = await live.services.files.store("default", "chart.png", "image/png", b"PNG bytes")
    theirs = listener.url("/internal/secret.txt")
    run_id = await submit(
        live,
        ReplyTarget(channel="slack", address="C1", thread_id="1.5"),
        {"reply": {"text": "see these", "attachments": [theirs, ours]}},
    )
    row = await wait_for_delivery(live, run_id, "sent")
    assert row["attempts"] == 1
    [post] = slack.posts
    assert post.args["text"].startswith("see these")
    assert f"<{theirs}>" in post.args["text"]
    assert list(slack.uploads.values()) == [b"PNG bytes"]
    assert listener.requests == []


async def test_a_response_url_that_is_not_slacks_gets_no_result(
    live_factory: LiveFactory, slack: SlackApi, listener: Listener
) -> None:
    live = await start_slack(live_factory, slack)
    target = ReplyTarget(
        channel="slack",
        address="C1",
        details={"response_url": listener.url("/collect"), "response_type": "ephemeral"},
    )
    run_id = await submit(live, target, {"reply": "the private answer"})
    row = await wait_for_delivery(live, run_id, "failed")
    assert "response_url" in row["last_error"]
    assert listener.requests == []
    assert slack.responses == []


def files_event(files: list[dict[str, str]]) -> str:
    """The body of a Slack ``event_callback``: an ``app_mention`` sharing ``files``."""
    event = {
        "type": "app_mention",
        "user": "U42",
        "text": f"<@{BOT_USER_ID}> files",
        "ts": "1700000000.000100",
        "channel": "C1",
        "event_ts": "1700000000.000100",
        "files": files,
    }
    return json.dumps(
        {
            "token": "legacy",
            "team_id": "T111",
            "api_app_id": "A111",
            "type": "event_callback",
            "event_id": "Ev1",
            "event_time": 1_700_000_000,
            "event": event,
            "authorizations": [{"team_id": "T111", "user_id": BOT_USER_ID, "is_bot": True}],
        }
    )


async def copied_files(live: Live, body: str) -> list[str]:
    """The names of the files the run of the Slack event ``body`` got."""
    async with httpx.AsyncClient() as http:
        answer = await http.post(
            f"{live.url}/slack/events", content=body, headers=signed_headers(SLACK_SECRET, body)
        )
    assert answer.status_code == 200
    await settled(live)  # the inbox processor made the run (and copied the files)
    async with live.services.database.read() as conn:
        [run_id] = (await conn.execute(select(runs.c.id))).scalars()
    record = await live.services.gateway.wait_until_finished(run_id, 20)
    assert record is not None and record.request_body is not None
    return [item["filename"] for item in json.loads(record.request_body)["attachments"]]


async def test_a_file_url_that_is_not_slacks_never_gets_the_bot_token(
    live_factory: LiveFactory, slack: SlackApi, listener: Listener
) -> None:
    live = await start_slack(live_factory, slack)
    slack.private_files["ok.txt"] = b"from slack"
    body = files_event(
        [
            {"id": "F1", "name": "x.txt", "url_private_download": listener.url("/steal")},
            {"id": "F2", "name": "ok.txt", "url_private_download": slack.private_url("ok.txt")},
        ]
    )
    assert await copied_files(live, body) == ["ok.txt"]
    assert slack.downloads == ["ok.txt"]
    assert listener.requests == []


async def test_a_slack_file_download_is_not_redirected_elsewhere(
    live_factory: LiveFactory, slack: SlackApi, listener: Listener
) -> None:
    live = await start_slack(live_factory, slack)
    slack.private_files["moved.txt"] = b"unused"
    slack.redirects["moved.txt"] = listener.url("/elsewhere")
    body = files_event(
        [{"id": "F1", "name": "moved.txt", "url_private_download": slack.private_url("moved.txt")}]
    )
    assert await copied_files(live, body) == []
    assert slack.downloads == ["moved.txt"]
    assert listener.requests == []


# --- WhatsApp (Twilio) ---------------------------------------------------------------------------


async def test_a_media_url_that_is_not_twilios_never_gets_the_account_credentials(
    live_factory: LiveFactory, twilio: FakeTwilioApi, listener: Listener
) -> None:
    live = await live_factory.start(
        whatsapp=twilio.whatsapp_section(workflow="echo"),
        delivery=PUBLIC_ONLY,
    )
    params = whatsapp_message_form(
        "look",
        sid="SM" + "1" * 32,
        user="whatsapp:+15005550006",
        NumMedia="2",
        MediaUrl0=listener.url("/Media/ME1"),
        MediaContentType0="image/png",
        MediaUrl1=twilio.add_media(b"real picture", "image/png"),
        MediaContentType1="image/png",
    )
    url = f"{live.url}/twilio/whatsapp"
    signature = RequestValidator(AUTH_TOKEN).compute_signature(url, params)
    async with httpx.AsyncClient() as http:
        answer = await http.post(url, data=params, headers={"X-Twilio-Signature": signature})
    assert answer.status_code == 200
    await twilio.wait_for(1, timeout=60)
    async with live.services.database.read() as conn:
        [body] = (
            await conn.execute(
                select(runs.c.request_body).where(runs.c.source == Source.WHATSAPP.value)
            )
        ).scalars()
    inputs = json.loads(body)
    assert [item["size"] for item in inputs["attachments"]] == [len(b"real picture")]
    [error] = inputs["event"]["media_errors"]
    assert error.startswith("MediaUrl0: not a Twilio media URL")
    assert listener.requests == []
