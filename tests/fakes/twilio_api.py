"""A fake of Twilio's REST API on 127.0.0.1, for the WhatsApp channel's tests (and the scheduler's).

It records every ``POST /2010-04-01/Accounts/<sid>/Messages.json`` (HTTP Basic auth checked) and
answers 201 with a Message resource like Twilio's, or, when told to, 429/5xx/4xx errors in Twilio's
JSON shape. It also serves media the way Twilio does: ``/2010-04-01/Accounts/<sid>/Messages/<MM>/
Media/<ME>`` demands Basic auth and redirects to a short-lived "CDN" URL that serves the bytes;
:meth:`FakeTwilioApi.hold_media` makes the media URLs hang until the test opens the gate.

Point ``[whatsapp] api_url`` at :attr:`FakeTwilioApi.url`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web
from multidict import MultiDict
from twilio.request_validator import RequestValidator

ACCOUNT_SID = "AC" + "0" * 32
AUTH_TOKEN = "tw-token"
SANDBOX_NUMBER = "whatsapp:+14155238886"


def whatsapp_message_form(
    body: str, *, sid: str, user: str, profile_name: str = "Ann", **extra: str
) -> dict[str, str]:
    """The form fields Twilio posts to a WhatsApp webhook for a text message from ``user`` to
    :data:`SANDBOX_NUMBER` (PROTOCOLS §2.1); ``extra`` adds fields or replaces them."""
    return {
        "SmsMessageSid": sid,
        "NumMedia": "0",
        "ProfileName": profile_name,
        "MessageType": "text",
        "SmsSid": sid,
        "WaId": user.removeprefix("whatsapp:+"),
        "SmsStatus": "received",
        "Body": body,
        "To": SANDBOX_NUMBER,
        "NumSegments": "1",
        "ReferralNumMedia": "0",
        "MessageSid": sid,
        "AccountSid": ACCOUNT_SID,
        "From": user,
        "ApiVersion": "2010-04-01",
        **extra,
    }


@dataclass(frozen=True)
class SentMessage:
    """One ``Messages.json`` post as Twilio received it."""

    sid: str
    form: MultiDict[str]

    def get(self, name: str) -> str | None:
        return self.form.get(name)

    @property
    def body(self) -> str | None:
        return self.form.get("Body")

    @property
    def sender(self) -> str | None:
        return self.form.get("From")

    @property
    def to(self) -> str | None:
        return self.form.get("To")

    @property
    def media_urls(self) -> list[str]:
        return self.form.getall("MediaUrl", [])


@dataclass
class _Failure:
    status: int
    code: int
    message: str
    retry_after: str | None
    successes_first: int


@dataclass
class FakeTwilioApi:
    """Twilio's Messages API and media URLs, recording what they were sent."""

    account_sid: str = ACCOUNT_SID
    auth_token: str = AUTH_TOKEN
    url: str = ""
    messages: list[SentMessage] = field(default_factory=list)
    attempts: int = 0
    media_fetches: list[str] = field(default_factory=list)
    _failures: list[_Failure] = field(default_factory=list)
    _media: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    _media_gate: asyncio.Event | None = None
    early_statuses: list[str] = field(default_factory=list)
    """Statuses called back (signed, to ``StatusCallback``) before the create call is answered."""
    callback_answers: list[int] = field(default_factory=list)
    hold: asyncio.Event | None = None
    """When set, ``Messages.json`` posts wait for this event before being answered (a Twilio
    that hangs past the sender's timeout)."""
    held: int = 0
    """Posts that have waited (or are waiting) on ``hold``."""
    keep_abandoned: bool = False
    """Whether a held post whose caller hung up meanwhile still creates its message (Twilio
    took it, the caller never heard) instead of nothing."""
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    def whatsapp_section(self, **overrides: Any) -> dict[str, Any]:
        """The server's ``whatsapp`` settings aimed at this fake: its account, URL and number."""
        return {
            "account_sid": self.account_sid,
            "auth_token": self.auth_token,
            "api_url": self.url,
            "from_number": SANDBOX_NUMBER,
            **overrides,
        }

    def hold_media(self) -> asyncio.Event:
        """Media URLs answer only once the returned event is set (a slow media server)."""
        self._media_gate = asyncio.Event()
        return self._media_gate

    async def wait_for_media_fetches(self, count: int, timeout: float = 20.0) -> list[str]:
        """The paths of the first ``count`` media requests, once that many arrived."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: len(self.media_fetches) >= count)
        return self.media_fetches[:count]

    def fail_next(
        self,
        status: int,
        *,
        code: int | None = None,
        message: str = "Too Many Requests",
        retry_after: str | None = None,
        after: int = 0,
    ) -> None:
        """Answer a later ``Messages.json`` post with an error: the next one, or the one after
        ``after`` more successful posts (failures queue up in the order they were asked for)."""
        self._failures.append(
            _Failure(status, code or status * 100 + 29, message, retry_after, after)
        )

    def add_media(self, content: bytes, content_type: str) -> str:
        """A Twilio-style media URL (Basic auth, then a redirect) serving ``content``."""
        media_sid = "ME" + secrets.token_hex(16)
        self._media[media_sid] = (content, content_type)
        message_sid = "MM" + secrets.token_hex(16)
        return (
            f"{self.url}/2010-04-01/Accounts/{self.account_sid}/Messages/{message_sid}"
            f"/Media/{media_sid}"
        )

    async def wait_held(self, count: int, timeout: float = 20.0) -> None:
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: self.held >= count)

    async def wait_for(self, count: int, timeout: float = 20.0) -> list[SentMessage]:
        """The first ``count`` messages, once at least that many arrived."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: len(self.messages) >= count)
        return self.messages[:count]

    def _authorized(self, request: web.Request) -> bool:
        expected = base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode()
        return request.headers.get("Authorization") == f"Basic {expected}"

    async def _create_message(self, request: web.Request) -> web.Response:
        if request.match_info["account"] != self.account_sid or not self._authorized(request):
            return _error(401, 20003, "Authenticate")
        form = MultiDict((k, v) for k, v in (await request.post()).items() if isinstance(v, str))
        if self.hold is not None:
            async with self._changed:
                self.held += 1
                self._changed.notify_all()
            await self.hold.wait()
            gone = request.transport is None or request.transport.is_closing()
            if gone and not self.keep_abandoned:
                return _error(503, 20503, "Service Unavailable")  # the caller gave up: nothing sent
        async with self._changed:
            self.attempts += 1
            if self._failures and self._failures[0].successes_first == 0:
                failure = self._failures.pop(0)
                headers = {"Retry-After": failure.retry_after} if failure.retry_after else {}
                return _error(failure.status, failure.code, failure.message, headers)
            if self._failures:
                self._failures[0].successes_first -= 1
            sid = "SM" + secrets.token_hex(16)
            self.messages.append(SentMessage(sid, form))
            self._changed.notify_all()
        callback = form.get("StatusCallback")
        if callback and self.early_statuses:
            await self._call_back(callback, sid, form)
        resource = {
            "sid": sid,
            "account_sid": self.account_sid,
            "from": form.get("From"),
            "to": form.get("To"),
            "body": form.get("Body"),
            "status": "queued",
            "direction": "outbound-api",
            "num_media": str(len(form.getall("MediaUrl", []))),
            "api_version": "2010-04-01",
            "date_created": "Sun, 22 Nov 2026 10:00:00 +0000",
            "uri": f"/2010-04-01/Accounts/{self.account_sid}/Messages/{sid}.json",
        }
        return web.json_response(resource, status=201)

    async def _list_messages(self, request: web.Request) -> web.Response:
        """``GET Messages.json?To=&From=``: the messages sent, newest first, like Twilio."""
        if request.match_info["account"] != self.account_sid or not self._authorized(request):
            return _error(401, 20003, "Authenticate")
        to, sender = request.query.get("To"), request.query.get("From")
        found = [
            {
                "sid": message.sid,
                "account_sid": self.account_sid,
                "from": message.sender,
                "to": message.to,
                "body": message.body,
                "status": "sent",
                "direction": "outbound-api",
                "api_version": "2010-04-01",
            }
            for message in reversed(self.messages)
            if (to is None or message.to == to) and (sender is None or message.sender == sender)
        ]
        size = int(request.query.get("PageSize", "50"))
        return web.json_response(
            {"messages": found[:size], "page": 0, "page_size": size, "next_page_uri": None}
        )

    async def _call_back(self, url: str, sid: str, message: MultiDict[str]) -> None:
        """Status callbacks as Twilio posts them, here before our create call is answered."""
        validator = RequestValidator(self.auth_token)
        async with aiohttp.ClientSession() as session:
            for status in self.early_statuses:
                form = {
                    "MessageSid": sid,
                    "MessageStatus": status,
                    "AccountSid": self.account_sid,
                    "From": message.get("From", ""),
                    "To": message.get("To", ""),
                    "ChannelPrefix": "whatsapp",
                }
                signature = validator.compute_signature(url, form)
                async with session.post(
                    url, data=form, headers={"X-Twilio-Signature": signature}
                ) as answer:
                    self.callback_answers.append(answer.status)

    async def _media_resource(self, request: web.Request) -> web.Response:
        async with self._changed:
            self.media_fetches.append(request.path)
            self._changed.notify_all()
        if self._media_gate is not None:
            await self._media_gate.wait()
        if not self._authorized(request):
            return _error(401, 20003, "Authenticate")
        media_sid = request.match_info["media"]
        if media_sid not in self._media:
            return _error(404, 20404, "The requested resource was not found")
        raise web.HTTPTemporaryRedirect(f"/cdn/{media_sid}?token={secrets.token_hex(8)}")

    async def _cdn(self, request: web.Request) -> web.Response:
        async with self._changed:
            self.media_fetches.append(request.path)
            self._changed.notify_all()
        content, content_type = self._media[request.match_info["media"]]
        return web.Response(body=content, content_type=content_type)


def _error(
    status: int, code: int, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    body = {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }
    return web.Response(
        text=json.dumps(body), status=status, content_type="application/json", headers=headers
    )


@asynccontextmanager
async def running_twilio_api(port: int, host: str = "127.0.0.1") -> AsyncIterator[FakeTwilioApi]:
    """The fake, serving on ``host:port`` until the block ends."""
    fake = FakeTwilioApi(url=f"http://{host}:{port}")
    app = web.Application()
    accounts = "/2010-04-01/Accounts/{account}"
    app.router.add_post(accounts + "/Messages.json", fake._create_message)
    app.router.add_get(accounts + "/Messages.json", fake._list_messages)
    app.router.add_get(accounts + "/Messages/{message}/Media/{media}", fake._media_resource)
    app.router.add_get("/cdn/{media}", fake._cdn)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    try:
        yield fake
    finally:
        await runner.cleanup()
