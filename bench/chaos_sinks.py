"""Where the chaos cluster sends: the fakes of tests/fakes/ plus a webhook sink, on the bridge.

:class:`Sinks` starts the fake Slack Web API, the fake Twilio REST API, the SMTP relay sink and
:class:`WebhookSink` on the hub address, stamps every record they keep with the time it arrived
(:meth:`Sinks.stamp`, polled: the fakes keep lists) and makes them misbehave for a while
(:meth:`Sinks.misbehave`): HTTP 500, 429 with ``Retry-After``, or hanging past the caller's
timeout (a hung call creates nothing: the fakes drop it once the caller gave up).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Literal

from aiohttp import web

from bench.chaos_net import HUB_ADDRESS
from tests.conftest import free_port
from tests.fakes.slack_api import SlackApi
from tests.fakes.smtp_sink import SmtpSink
from tests.fakes.twilio_api import FakeTwilioApi, running_twilio_api

Misbehaviour = Literal["500", "429", "hang"]
Provider = Literal["slack", "twilio", "smtp", "webhook"]
RETRY_AFTER = 2
FAILURES_PER_FAULT = 6


@dataclass(frozen=True)
class Hook:
    """One POST the webhook sink received."""

    schedule: str
    idempotency_key: str
    body: bytes
    at: float


@dataclass
class WebhookSink:
    """Schedules deliver here (``/hook/<schedule id>``); 500/429/hang on demand."""

    url: str = ""
    hooks: list[Hook] = field(default_factory=list)
    mode: Misbehaviour | None = None
    released: asyncio.Event = field(default_factory=asyncio.Event)

    async def receive(self, request: web.Request) -> web.Response:
        body = await request.read()
        mode = self.mode
        if mode == "hang":
            await self.released.wait()  # until the fault ends
            if _gone(request):
                return web.Response(status=503)
        elif mode == "500":
            return web.Response(status=500, text="chaos")
        elif mode == "429":
            return web.Response(status=429, headers={"Retry-After": str(RETRY_AFTER)})
        key = request.headers.get("Idempotency-Key", "")
        self.hooks.append(Hook(request.match_info["schedule"], key, body, time.monotonic()))
        return web.json_response({"ok": True})


def _gone(request: web.Request) -> bool:
    return request.transport is None or request.transport.is_closing()


@dataclass
class Sinks:
    slack: SlackApi
    twilio: FakeTwilioApi
    smtp: SmtpSink
    webhook: WebhookSink
    stamps: dict[tuple[str, int], float] = field(default_factory=dict)
    """(provider, index in its record list) → when the harness first saw it."""

    def stamp(self) -> None:
        now = time.monotonic()
        for provider, count in (
            ("slack", len(self.slack.calls)),
            ("twilio", len(self.twilio.messages)),
            ("smtp", len(self.smtp.messages)),
        ):
            for index in range(count - 1, -1, -1):
                if (provider, index) in self.stamps:
                    break
                self.stamps[(provider, index)] = now

    def seen_at(self, provider: str, index: int) -> float:
        return self.stamps.get((provider, index), time.monotonic())

    async def misbehave(self, provider: Provider, mode: Misbehaviour, seconds: float) -> None:
        """``provider`` answers ``mode`` for about ``seconds`` (the 500/429 of Slack and Twilio:
        the next :data:`FAILURES_PER_FAULT` calls, their fakes count calls, not time)."""
        if provider == "slack":
            await self._slack(mode, seconds)
        elif provider == "twilio":
            await self._twilio(mode, seconds)
        elif provider == "smtp":
            self.smtp.answer = "451 4.3.0 chaos: try again later"
            await asyncio.sleep(seconds)  # the fault's length
            self.smtp.answer = None
        else:
            self.webhook.released.clear()
            self.webhook.mode = mode
            await asyncio.sleep(seconds)  # the fault's length
            self.webhook.mode = None
            self.webhook.released.set()

    async def _slack(self, mode: Misbehaviour, seconds: float) -> None:
        if mode == "hang":
            gate = asyncio.Event()
            self.slack.holds["chat.postMessage"] = gate
            await asyncio.sleep(seconds)  # the fault's length
            del self.slack.holds["chat.postMessage"]
            gate.set()
            return
        for _ in range(FAILURES_PER_FAULT):
            if mode == "429":
                self.slack.fail_next("chat.postMessage", status=429, retry_after=RETRY_AFTER)
            else:
                self.slack.fail_next("chat.postMessage", status=500, error="internal_error")

    async def _twilio(self, mode: Misbehaviour, seconds: float) -> None:
        if mode == "hang":
            gate = asyncio.Event()
            self.twilio.hold = gate
            await asyncio.sleep(seconds)  # the fault's length
            self.twilio.hold = None
            gate.set()
            return
        for _ in range(FAILURES_PER_FAULT):
            if mode == "429":
                self.twilio.fail_next(429, retry_after=str(RETRY_AFTER))
            else:
                self.twilio.fail_next(500, message="Internal Server Error")


@contextlib.asynccontextmanager
async def running_sinks() -> AsyncIterator[Sinks]:
    """Every sink on the hub address, recording, until the block ends."""
    webhook = WebhookSink()
    app = web.Application()
    app.router.add_post("/hook/{schedule}", webhook.receive)
    runner = web.AppRunner(app, handler_cancellation=False)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, HUB_ADDRESS, port).start()
    webhook.url = f"http://{HUB_ADDRESS}:{port}"
    smtp = SmtpSink(port=free_port(), host=HUB_ADDRESS)
    await smtp.start()
    try:
        async with (
            SlackApi.running(host=HUB_ADDRESS) as slack,
            running_twilio_api(free_port(), host=HUB_ADDRESS) as twilio,
        ):
            yield Sinks(slack, twilio, smtp, webhook)
    finally:
        await smtp.stop()
        await runner.cleanup()
