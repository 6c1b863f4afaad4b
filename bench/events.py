"""Signed provider requests for wrk: every one a distinct event, signed as the provider signs it.

wrk's LuaJIT has no HMAC, so pools are signed here, just before the run that replays them
(Slack's 5-minute window, PROTOCOLS §1.1: a pool is good for a few minutes). Event numbers come
from one counter per process so that no two pools of a run repeat an event.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from urllib.parse import urlencode, urlsplit

from slack_sdk.signature import SignatureVerifier
from twilio.request_validator import RequestValidator

from bench.wrk import raw_request
from tests.fakes.slack_api import BOT_USER_ID
from tests.fakes.twilio_api import ACCOUNT_SID, whatsapp_message_form

SLACK_SECRET = "bench-signing-secret-0123456789ab"
TWILIO_TOKEN = "bench-twilio-token"
TWILIO_ACCOUNT = ACCOUNT_SID
WHATSAPP_USERS = 1000

_numbers = itertools.count(1)


def slack_mention(number: int) -> bytes:
    """An ``app_mention`` with its own event id and ts (Slack dedupes on both)."""
    ts = f"{1_700_000_000 + number // 1_000_000}.{number % 1_000_000:06d}"
    event = {
        "type": "app_mention",
        "user": "U42",
        "user_profile": {"display_name": "Alice"},
        "text": f"<@{BOT_USER_ID}> benchmark message {number}",
        "ts": ts,
        "channel": f"C{number % 100:03d}",
        "event_ts": ts,
    }
    return json.dumps(
        {
            "token": "legacy",
            "team_id": "T111",
            "api_app_id": "A111",
            "type": "event_callback",
            "event_id": f"Ev{number:010d}",
            "event_time": 1_700_000_000,
            "event": event,
        }
    ).encode()


def slack_pool(url: str, count: int) -> Iterator[bytes]:
    """``count`` signed ``POST /slack/events`` (v0 HMAC of ``v0:<timestamp>:<body>``)."""
    parts = urlsplit(url)
    verifier = SignatureVerifier(SLACK_SECRET)
    stamp = str(int(time.time()))
    for number in itertools.islice(_numbers, count):
        body = slack_mention(number)
        signature = verifier.generate_signature(timestamp=stamp, body=body)
        assert signature is not None
        headers = {
            "Content-Type": "application/json",
            "X-Slack-Request-Timestamp": stamp,
            "X-Slack-Signature": signature,
        }
        yield raw_request(parts.netloc, parts.path, headers, body)


def twilio_sid(number: int) -> str:
    return f"SM{number:032d}"


def twilio_pool(url: str, count: int) -> Iterator[bytes]:
    """``count`` signed WhatsApp webhooks (``X-Twilio-Signature`` over the URL and the form),
    distinct MessageSids from :data:`WHATSAPP_USERS` users."""
    parts = urlsplit(url)
    validator = RequestValidator(TWILIO_TOKEN)
    for number in itertools.islice(_numbers, count):
        form = whatsapp_message_form(
            f"Hello, this is message {number}. What is the weather like today?",
            sid=twilio_sid(number),
            user=f"whatsapp:+1555{number % WHATSAPP_USERS:07d}",
            profile_name=f"User {number % WHATSAPP_USERS}",
        )
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Twilio-Signature": validator.compute_signature(url, form),
        }
        yield raw_request(parts.netloc, parts.path, headers, urlencode(form).encode())
