"""Malformed input from anyone on the network: a 4xx with a JSON ``detail``, never a 500.

Every case goes over a raw socket (so bytes no HTTP client would send arrive as sent), checks the
answer, that nothing was stored, and that the server logged no ERROR (each of these used to be
a 500 with a traceback).
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from sqlalchemy import func, select

from core.models import RunRequest, Source
from dispatch.tables import runs
from scheduler.tables import schedules
from tests.conftest import Live, LiveFactory, free_port
from tests.fakes.slack_api import SlackApi
from tests.fakes.smtp_sink import SmtpSink
from tests.fakes.twilio_api import running_twilio_api
from triggers.whatsapp.tables import inbound_events

SLACK_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
MAILGUN_KEY = "mg-signing-key"
DEEP = b"[" * 990 + b"]" * 990
KEY = b"<key>"
"""Replaced by the test server's API key."""


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class Case:
    method: str
    path: str
    body: bytes = b""
    headers: tuple[tuple[bytes, bytes], ...] = ()
    status: int = 400
    detail: str = ""
    """A piece of the expected ``detail``."""
    sign_slack: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def _form(**headers: bytes) -> tuple[tuple[bytes, bytes], ...]:
    return tuple((name.replace("_", "-").encode(), value) for name, value in headers.items())


JSON = _form(Content_Type=b"application/json")
AUTHORIZED_JSON = (*JSON, (b"Authorization", b"Bearer " + KEY))
URLENCODED = _form(Content_Type=b"application/x-www-form-urlencoded")

CASES: dict[str, Case] = {
    "authorization-not-utf8": Case(
        "POST", "/run/echo", b"{}", (*JSON, (b"Authorization", b"Bearer cwk-\xff\xfe")), 401
    ),
    "run-key-signature-not-ascii": Case(
        "POST",
        "/run/echo",
        b"{}",
        (*JSON, (b"Authorization", "Bearer cwk-run.r1.default.9999999999.é".encode())),
        401,
        "run key",
    ),
    "run-key-expiry-superscript-digit": Case(
        "POST",
        "/run/echo",
        b"{}",
        (*JSON, (b"Authorization", "Bearer cwk-run.r1.default.²².sig".encode())),
        401,
        "run key",
    ),
    "file-signature-not-ascii": Case(
        "GET", "/files/f1/a.txt?expires=9999999999&sig=%C3%A9", status=403, detail="signature"
    ),
    "file-expiry-superscript-digit": Case(
        "GET", "/files/f1/a.txt?expires=%C2%B2&sig=abc", status=403, detail="not signed"
    ),
    "run-json-nested-990-deep": Case(
        "POST", "/run/echo", DEEP, AUTHORIZED_JSON, detail="nested deeper than"
    ),
    "run-async-json-nested-990-deep": Case(
        "POST", "/run_async/echo", DEEP, AUTHORIZED_JSON, detail="nested deeper than"
    ),
    "schedules-json-nested-990-deep": Case(
        "POST", "/schedules", b'{"x": ' + DEEP + b"}", AUTHORIZED_JSON, detail="nested deeper"
    ),
    "idempotency-key-not-utf8": Case(
        "POST",
        "/run_async/echo",
        b"1",
        (*AUTHORIZED_JSON, (b"Idempotency-Key", b"k\xff")),
        detail="Idempotency-Key",
    ),
    "correlation-id-not-utf8": Case(
        "POST",
        "/run_async/echo",
        b"1",
        (*AUTHORIZED_JSON, (b"X-Correlation-Id", b"c\xff")),
        detail="X-Correlation-Id",
    ),
    "provisioned-id-not-utf8": Case(
        "POST",
        "/run_async/echo",
        b"1",
        (*AUTHORIZED_JSON, (b"X-Provisioned-Request-Id", b"r\xff")),
        detail="X-Provisioned-Request-Id",
    ),
    "secret-json-nested-990-deep": Case(
        "PUT", "/api/v1/secrets/TOKEN", DEEP, AUTHORIZED_JSON, detail="nested deeper than"
    ),
    "run-path-with-nul": Case("POST", "/run/echo/a%00b", b"1", AUTHORIZED_JSON, detail="NUL"),
    "result-id-with-nul": Case(
        "GET", "/result/req%00x", headers=((b"Authorization", b"Bearer " + KEY),), detail="NUL"
    ),
    "run-nan": Case("POST", "/run/echo", b'{"x": NaN}', AUTHORIZED_JSON, detail="NaN"),
    "run-infinity": Case("POST", "/run/echo", b"[-Infinity]", AUTHORIZED_JSON, detail="Infinity"),
    "schedules-nan": Case("POST", "/schedules", b'{"x": NaN}', AUTHORIZED_JSON, detail="NaN"),
    "run-body-not-utf8": Case("POST", "/run/echo", b'"\xff"', AUTHORIZED_JSON, detail="UTF-8"),
    "gzip-with-plain-body": Case(
        "POST",
        "/run/echo",
        b'{"plain": true}',
        (*AUTHORIZED_JSON, (b"Content-Encoding", b"gzip")),
        detail="cannot be read",
    ),
    "logs-after-past-the-last-utc-time": Case(
        "GET",
        "/logs/<run>?after=9999-12-31T23:59:59-23:59",
        headers=((b"Authorization", b"Bearer " + KEY),),
        detail="after",
    ),
    "slack-unsigned-not-utf8": Case("POST", "/slack/events", b'{"a": "\xff"}', JSON, 401),
    "slack-timestamp-abc": Case(
        "POST",
        "/slack/events",
        b"{}",
        (*JSON, (b"X-Slack-Request-Timestamp", b"abc"), (b"X-Slack-Signature", b"v0=00")),
        401,
        "X-Slack-Request-Timestamp",
    ),
    "slack-signature-not-utf8": Case(
        "POST",
        "/slack/events",
        b"{}",
        (*JSON, (b"X-Slack-Request-Timestamp", b"<now>"), (b"X-Slack-Signature", b"v0=\xff")),
        401,
        "X-Slack-Signature",
    ),
    "slack-signed-not-utf8": Case(
        "POST", "/slack/events", b'{"a": "\xff"}', JSON, detail="UTF-8", sign_slack=True
    ),
    "slack-signed-json-array": Case(
        "POST", "/slack/events", b"[1, 2]", JSON, detail="JSON object", sign_slack=True
    ),
    "slack-signed-payload-not-json": Case(
        "POST", "/slack/events", b"payload=notjson", URLENCODED, detail="payload", sign_slack=True
    ),
    "slack-signed-unknown-charset": Case(
        "POST",
        "/slack/commands",
        b"command=%2Fx&text=hi",
        _form(Content_Type=b"application/x-www-form-urlencoded; charset=no-such-charset"),
        detail="charset",
        sign_slack=True,
    ),
    "twilio-form-not-utf8": Case(
        "POST", "/twilio/whatsapp", b"MessageSid=SM1&Body=%FF%FE", URLENCODED, detail="UTF-8"
    ),
    "twilio-raw-bytes-not-utf8": Case(
        "POST", "/twilio/whatsapp", b"MessageSid=SM1&Body=\xff", URLENCODED, detail="UTF-8"
    ),
    "twilio-unknown-charset": Case(
        "POST",
        "/twilio/status",
        b"MessageSid=SM1",
        _form(Content_Type=b"application/x-www-form-urlencoded; charset=no-such-charset"),
        detail="charset",
    ),
    "twilio-file-part": Case(
        "POST",
        "/twilio/whatsapp",
        b"--b\r\nContent-Disposition: form-data; name=MessageSid\r\n\r\nSM1\r\n"
        b'--b\r\nContent-Disposition: form-data; name="f"; filename="a.txt"\r\n'
        b"Content-Type: text/plain\r\n\r\nhello\r\n--b--\r\n",
        _form(Content_Type=b"multipart/form-data; boundary=b"),
        detail="x-www-form-urlencoded",
    ),
    "twilio-signature-not-utf8": Case(
        "POST",
        "/twilio/whatsapp",
        b"MessageSid=SM1&From=whatsapp%3A%2B1&To=whatsapp%3A%2B2",
        (*URLENCODED, (b"X-Twilio-Signature", b"\xff\xfe")),
        403,
        "X-Twilio-Signature",
    ),
    "mailgun-signature-not-ascii": Case(
        "POST",
        "/email/mailgun",
        b"timestamp=<now>&token=abc&signature=%C3%A9&recipient=bot%40example.test",
        URLENCODED,
        406,
        "invalid signature",
    ),
    "mailgun-timestamp-superscript-digit": Case(
        "POST",
        "/email/mailgun",
        b"timestamp=%C2%B2&token=abc&signature=<mailgun>&recipient=bot%40example.test",
        URLENCODED,
        406,
        "stale",
    ),
    "sendgrid-basic-auth-not-ascii": Case(
        "POST",
        "/email/sendgrid",
        b"email=x",
        (*URLENCODED, (b"Authorization", "Basic é".encode())),
        401,
        "SendGrid token",
    ),
    "mailgun-unknown-charset": Case(
        "POST",
        "/email/mailgun",
        b"timestamp=1&token=abc&signature=x",
        _form(Content_Type=b"application/x-www-form-urlencoded; charset=no-such-charset"),
        detail="unreadable form",
    ),
}


async def raw_http(live: Live, request: bytes) -> Answer:
    """One request as these exact bytes; the answer as the server sent it."""
    port = int(live.url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(30):
            data = await reader.read()
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Answer(int(status_line.split()[1]), headers, body)


def http_request(
    method: str, path: str, headers: tuple[tuple[bytes, bytes], ...], body: bytes
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1".encode(), b"Host: 127.0.0.1", b"Connection: close"]
    lines += [name + b": " + value for name, value in headers]
    if body or method == "POST":
        lines.append(b"Content-Length: " + str(len(body)).encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def slack_signature(body: bytes, timestamp: str) -> bytes:
    digest = hmac.new(SLACK_SECRET.encode(), f"v0:{timestamp}:".encode() + body, hashlib.sha256)
    return b"v0=" + digest.hexdigest().encode()


@pytest.fixture
async def fakes() -> AsyncIterator[tuple[SlackApi, Any, SmtpSink]]:
    sink = SmtpSink()
    await sink.start()
    try:
        async with SlackApi.running() as slack, running_twilio_api(free_port()) as twilio:
            yield slack, twilio, sink
    finally:
        await sink.stop()


@pytest.fixture
async def everything(live_factory: LiveFactory, fakes: tuple[SlackApi, Any, SmtpSink]) -> Live:
    """One node with every intake on: the API, Slack, WhatsApp, Mailgun."""
    slack, twilio, sink = fakes
    return await live_factory.start(
        slack={
            "signing_secret": SLACK_SECRET,
            "bot_token": "xoxb-test",
            "api_url": slack.api_url,
            "workflow": "echo",
            "client_id": "111.222",
            "client_secret": "shh",
        },
        whatsapp=twilio.whatsapp_section(workflow="echo"),
        email={
            "smtp_port": free_port(),
            "addresses": ["bot@example.test"],
            "workflow": "echo",
            "relay_url": sink.url,
            "mailgun_signing_key": MAILGUN_KEY,
            "sendgrid_token": "sg-token",
        },
    )


async def stored(live: Live) -> tuple[int, ...]:
    async with live.services.database.read() as conn:
        counts = []
        for table in (runs, schedules, inbound_events):
            found = await conn.execute(select(func.count()).select_from(table))
            counts.append(int(found.scalar_one()))
        return tuple(counts)


def errors_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]


@pytest.mark.parametrize("name", list(CASES))
async def test_malformed_request_gets_a_json_4xx_and_stores_nothing(
    everything: Live, caplog: pytest.LogCaptureFixture, name: str
) -> None:
    case = CASES[name]
    live = everything
    now = str(int(time.time())).encode()
    path, body = case.path, case.body.replace(b"<now>", now)
    if "<run>" in path:  # a run to read the logs of
        submitted = await live.services.gateway.submit(
            RunRequest(owner_id="default", service_id="echo", body="1", source=Source.API)
        )
        path = path.replace("<run>", submitted.id)
    if b"<mailgun>" in body:
        signature = hmac.new(MAILGUN_KEY.encode(), "²abc".encode(), hashlib.sha256).hexdigest()
        body = body.replace(b"<mailgun>", signature.encode())
    headers = tuple(
        (name, value.replace(KEY, live.key.encode()).replace(b"<now>", now))
        for name, value in case.headers
    )
    if case.sign_slack:
        headers += (
            (b"X-Slack-Request-Timestamp", now),
            (b"X-Slack-Signature", slack_signature(body, now.decode())),
        )
    before = await stored(live)
    caplog.clear()

    answer = await raw_http(live, http_request(case.method, path, headers, body))

    assert answer.status == case.status, answer.body
    assert answer.headers["content-type"].startswith("application/json"), answer.headers
    assert case.detail in answer.json()["detail"]
    assert await stored(live) == before
    assert errors_logged(caplog) == []


async def test_a_workflow_answer_nested_5000_deep_is_shown_as_text_by_result(
    live: Live, caplog: pytest.LogCaptureFixture
) -> None:
    deep = "[" * 5000 + "]" * 5000
    submitted = await live.services.gateway.submit(
        RunRequest(owner_id="default", service_id="echo", body=deep, source=Source.API)
    )
    request = http_request(
        "GET",
        f"/result/{submitted.id}?timeout=30",
        ((b"Authorization", b"Bearer " + live.key.encode()),),
        b"",
    )

    answer = await raw_http(live, request)

    assert answer.status == 200, answer.body
    record = answer.json()
    assert record["status"] == "completed"
    assert record["responseJson"] is None and record["responseText"] == deep
    assert errors_logged(caplog) == []


async def test_a_gzip_body_that_is_gzip_is_still_read(live: Live) -> None:
    body = gzip.compress(b'{"zipped": true}')
    headers = (*AUTHORIZED_JSON, (b"Content-Encoding", b"gzip"))
    headers = tuple((n, v.replace(KEY, live.key.encode())) for n, v in headers)

    answer = await raw_http(live, http_request("POST", "/run/echo", headers, body))

    assert (answer.status, answer.json()) == (200, {"zipped": True})


async def test_the_slack_install_page_ignores_a_body_in_an_unknown_charset(
    everything: Live, caplog: pytest.LogCaptureFixture
) -> None:
    headers = _form(Content_Type=b"text/plain; charset=no-such-charset")

    answer = await raw_http(everything, http_request("GET", "/slack/install", headers, b"x"))

    assert answer.status == 200 and b"client_id=111.222" in answer.body
    assert errors_logged(caplog) == []
