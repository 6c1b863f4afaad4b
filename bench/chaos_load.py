"""Steady load on the chaos cluster from every source at once, each event carrying a token.

Conversations run side by side, each sending its messages one after the other (the next once the
previous was acknowledged or given up): Slack threads (an ``app_mention`` and its ``message``
twin per message, retried the way Slack retries what it saw no 2xx for, ``X-Slack-Retry-Num``),
WhatsApp chats (signed like Twilio, over the public URL; retried on failures), mail threads over
SMTP (``In-Reply-To``/``References``; retried on 4xx and lost connections like an MTA) and
``/run_async`` calls (retried with the same ``Idempotency-Key``). Requests go to a random web
node whose process is alive (a load balancer with health checks: a node cut off from the bridge
still looks alive and its requests time out). The :class:`Ledger` keeps what was sent and acked.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.message import EmailMessage
from urllib.parse import urlencode

import aiosmtplib
import httpx
from twilio.request_validator import RequestValidator

from bench.chaos_cluster import (
    BOT_ADDRESS,
    PUBLIC_URL,
    SLACK_SECRET,
    SMTP_PORT,
    TWILIO_TOKEN,
    Node,
)
from tests.fakes.slack_api import BOT_USER_ID, TEAM_ID, signed_headers
from tests.fakes.twilio_api import whatsapp_message_form

SLACK_RETRIES = (1.0, 2.0, 4.0)
"""Slack retries an un-acked event three times (PROTOCOLS §1: 0 s, 1 min, 5 min; compressed)."""
SLACK_ACK_TIMEOUT = 3.0
"""Slack counts a delivery failed without a 2xx within 3 s."""
OTHER_RETRIES = (1.0, 2.0, 4.0)
TWILIO_TIMEOUT = 15.0
THREAD_LENGTH = 8


@dataclass
class Sent:
    """One source event (a Slack message is one, whatever its twins and retries)."""

    source: str
    token: str
    conversation: str
    seq: int
    sent_at: float
    acked_at: float | None = None
    attempts: int = 0
    request_id: str | None = None
    """``/run_async``: the id every acknowledged attempt answered (they must agree)."""
    answers: list[str] = field(default_factory=list)


@dataclass
class Ledger:
    sent: list[Sent] = field(default_factory=list)
    numbers: dict[str, int] = field(default_factory=dict)

    def new(self, source: str, conversation: str, seq: int) -> Sent:
        number = self.numbers.get(source, 0) + 1
        self.numbers[source] = number
        entry = Sent(source, f"chaos-{source[0]}-{number:06d}", conversation, seq, time.monotonic())
        self.sent.append(entry)
        return entry

    def acked(self) -> list[Sent]:
        return [entry for entry in self.sent if entry.acked_at is not None]


@dataclass
class Load:
    ledger: Ledger
    nodes: list[Node]
    key: str
    rng: random.Random
    until: float
    rate: float = 1.0
    http: httpx.AsyncClient = field(default_factory=lambda: httpx.AsyncClient())

    def pick(self) -> Node:
        alive = [node for node in self.nodes if node.is_web and node.alive]
        return self.rng.choice(alive or [node for node in self.nodes if node.is_web])

    async def run(self) -> None:
        """Every conversation until ``until``, each one's last message answered or given up."""
        loops = [self._slack(channel) for channel in range(4)]
        loops += [self._whatsapp(chat) for chat in range(8)]
        loops += [self._email(thread) for thread in range(3)]
        loops += [self._api(caller) for caller in range(2)]
        try:
            await asyncio.gather(*loops)
        finally:
            await self.http.aclose()

    async def _paced(self, interval: float, send: Callable[[int], object]) -> None:
        seq = 0
        await asyncio.sleep(self.rng.uniform(0, interval))  # spread the conversations' starts
        while time.monotonic() < self.until:
            started = time.monotonic()
            result = send(seq)
            if asyncio.iscoroutine(result):
                await result
            seq += 1
            pause = interval / self.rate - (time.monotonic() - started)
            await asyncio.sleep(max(0.0, pause))  # the load's pace

    # --- Slack ---------------------------------------------------------------------------

    async def _slack(self, channel_number: int) -> None:
        channel = f"C{channel_number:03d}CHAOS"
        root: list[str] = []

        async def send(seq: int) -> None:
            ts = f"{int(time.time())}.{(seq * 7919 + channel_number) % 1_000_000:06d}"
            if seq % THREAD_LENGTH == 0:
                root[:] = [ts]
            entry = self.ledger.new("slack", f"{channel}/{root[0]}", seq)
            event = {
                "type": "app_mention",
                "user": "U42",
                "user_profile": {"display_name": "Alice"},
                "text": f"<@{BOT_USER_ID}> {entry.token}",
                "ts": ts,
                "channel": channel,
                "event_ts": ts,
            }
            if ts != root[0]:
                event["thread_ts"] = root[0]
            twin = {**event, "type": "message", "channel_type": "channel"}
            bodies = [
                self._slack_body(event, f"Ev{entry.token}a"),
                self._slack_body(twin, f"Ev{entry.token}m"),
            ]
            mention, _ = await asyncio.gather(*(self._slack_deliver(entry, b) for b in bodies))
            if mention:
                entry.acked_at = time.monotonic()

        await self._paced(1.0, send)

    @staticmethod
    def _slack_body(event: Mapping[str, object], event_id: str) -> str:
        return json.dumps(
            {
                "token": "legacy",
                "team_id": TEAM_ID,
                "api_app_id": "A111",
                "type": "event_callback",
                "event_id": event_id,
                "event_time": int(time.time()),
                "event": event,
            }
        )

    async def _slack_deliver(self, entry: Sent, body: str) -> bool:
        for attempt in range(len(SLACK_RETRIES) + 1):
            headers = signed_headers(SLACK_SECRET, body)
            if attempt:
                headers["X-Slack-Retry-Num"] = str(attempt)
                headers["X-Slack-Retry-Reason"] = "http_timeout"
            entry.attempts += 1
            try:
                response = await self.http.post(
                    f"{self.pick().url}/slack/events",
                    content=body,
                    headers=headers,
                    timeout=SLACK_ACK_TIMEOUT,
                )
                if response.is_success:
                    return True
            except httpx.HTTPError:
                pass
            if attempt < len(SLACK_RETRIES):
                await asyncio.sleep(SLACK_RETRIES[attempt])  # Slack's retry schedule
        return False

    # --- WhatsApp ------------------------------------------------------------------------

    async def _whatsapp(self, chat: int) -> None:
        user = f"whatsapp:+1555{chat:07d}"
        validator = RequestValidator(TWILIO_TOKEN)
        url = f"{PUBLIC_URL}/twilio/whatsapp"

        async def send(seq: int) -> None:
            entry = self.ledger.new("whatsapp", user, seq)
            sid = "SM" + entry.token.replace("-", "").ljust(32, "0")[:32]
            form = whatsapp_message_form(entry.token, sid=sid, user=user)
            headers = {
                "Content-Type": "application/x-www-form-urlencoded",
                "X-Twilio-Signature": validator.compute_signature(url, form),
            }
            body = urlencode(form)
            for attempt in range(len(OTHER_RETRIES) + 1):
                entry.attempts += 1
                try:
                    response = await self.http.post(
                        f"{self.pick().url}/twilio/whatsapp",
                        content=body,
                        headers=headers,
                        timeout=TWILIO_TIMEOUT,
                    )
                    if response.is_success:
                        entry.acked_at = time.monotonic()
                        return
                except httpx.HTTPError:
                    pass
                if attempt < len(OTHER_RETRIES):
                    await asyncio.sleep(OTHER_RETRIES[attempt])

        await self._paced(1.5, send)

    # --- email ---------------------------------------------------------------------------

    async def _email(self, thread: int) -> None:
        sender = f"writer{thread}@sender.test"
        chain: list[str] = []

        async def send(seq: int) -> None:
            if seq % THREAD_LENGTH == 0:
                chain.clear()
            entry = self.ledger.new("email", "", seq)
            # Not the token: References repeat the thread's Message-IDs in every later mail.
            message_id = f"<mail-{entry.token.rsplit('-', 1)[1]}@sender.test>"
            entry.conversation = chain[0] if chain else message_id
            mail = EmailMessage()
            mail["From"] = f"Writer {thread} <{sender}>"
            mail["To"] = BOT_ADDRESS
            mail["Subject"] = f"{'Re: ' if chain else ''}thread {thread}"
            mail["Message-ID"] = message_id
            if chain:
                mail["In-Reply-To"] = chain[-1]
                mail["References"] = " ".join(chain)
            mail.set_content(entry.token)
            chain.append(message_id)
            for attempt in range(len(OTHER_RETRIES) + 1):
                entry.attempts += 1
                try:
                    await aiosmtplib.send(
                        mail,
                        hostname=self.pick().address,
                        port=SMTP_PORT,
                        start_tls=False,
                        timeout=10,
                    )
                    entry.acked_at = time.monotonic()
                    return
                except aiosmtplib.SMTPResponseException as exc:
                    entry.answers.append(f"{exc.code} {exc.message}")
                    if exc.code >= 500:
                        return  # a 5xx is final: a real MTA bounces it
                except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
                    entry.answers.append(type(exc).__name__)
                if attempt < len(OTHER_RETRIES):
                    await asyncio.sleep(OTHER_RETRIES[attempt])

        await self._paced(2.0, send)

    # --- /run_async ----------------------------------------------------------------------

    async def _api(self, caller: int) -> None:
        async def send(seq: int) -> None:
            entry = self.ledger.new("api", f"caller-{caller}", seq)
            headers = {"Authorization": f"Bearer {self.key}", "Idempotency-Key": entry.token}
            for attempt in range(len(OTHER_RETRIES) + 1):
                entry.attempts += 1
                try:
                    response = await self.http.post(
                        f"{self.pick().url}/run_async/echo/",
                        json={"token": entry.token},
                        headers=headers,
                        timeout=10,
                    )
                    if response.is_success:
                        request_id = str(response.json()["request_id"])
                        entry.answers.append(request_id)
                        entry.request_id = entry.request_id or request_id
                        entry.acked_at = entry.acked_at or time.monotonic()
                        return
                    entry.answers.append(str(response.status_code))
                except httpx.HTTPError as exc:
                    entry.answers.append(type(exc).__name__)
                if attempt < len(OTHER_RETRIES):
                    await asyncio.sleep(OTHER_RETRIES[attempt])

        await self._paced(1.0, send)
