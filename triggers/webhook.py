"""The ``webhook`` channel: POST a run's request record to a URL, signed, retried by the outbox.

Receivers check ``X-Switchboard-Signature: v1=<hex>``, the HMAC-SHA256 (key: the delivery
``webhook_secret``) of ``<X-Switchboard-Timestamp>.<raw body>``, and may reject stale timestamps.
``Idempotency-Key`` is the same on every attempt of one delivery, so a receiver can drop repeats.
Only public addresses, or what ``[delivery] allow_hosts`` allows, are sent to: the URL is checked
here, each address it resolves to by the client's transport (``triggers/egress.py``); a refused
target fails the delivery at once (no retry can change the answer).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx

from core.addresses import DestinationPolicy, RefusedDestination
from core.clock import Clock
from core.replies import Delivery, SendResult

TIMEOUT_SECONDS = 10.0


def webhook_signature(secret: bytes, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"v1={digest}"


class WebhookSender:
    """Implements ``core.ports.Sender`` for ``webhook`` reply targets (address = the URL).

    ``client`` should be :func:`triggers.egress.guarded_client` with the same ``policy``."""

    def __init__(
        self, client: httpx.AsyncClient, secret: bytes, clock: Clock, policy: DestinationPolicy
    ) -> None:
        self._client = client
        self._secret = secret
        self._clock = clock
        self._policy = policy

    async def send(self, delivery: Delivery) -> SendResult:
        url = str(delivery.target.get("address") or "")
        try:
            self._policy.check_url(url)
        except RefusedDestination as exc:
            return SendResult.failed(f"webhook target refused: {exc.detail}")
        body = json.dumps(delivery.record, ensure_ascii=False).encode()
        timestamp = str(int(self._clock.now().timestamp()))
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "switchboard-webhook",
            "X-Switchboard-Timestamp": timestamp,
            "X-Switchboard-Signature": webhook_signature(self._secret, timestamp, body),
            "Idempotency-Key": f"switchboard-delivery-{delivery.id}",
        }
        try:
            response = await self._client.post(
                url, content=body, headers=headers, timeout=TIMEOUT_SECONDS
            )
        except RefusedDestination as exc:  # at connect time: what the name resolves to now
            return SendResult.failed(f"webhook target refused: {exc.detail}")
        except httpx.HTTPError as exc:
            return SendResult.retry(f"webhook {url} unreachable: {type(exc).__name__}")
        if response.is_success:
            return SendResult.sent()
        error = f"webhook {url} answered {response.status_code}"
        if response.status_code == 429 or response.status_code >= 500:
            return SendResult.retry(error, after=retry_after(response.headers.get("Retry-After")))
        return SendResult.failed(error)


def retry_after(value: str | None) -> float | None:
    """Seconds from an HTTP ``Retry-After`` (delta-seconds or an HTTP date), if it makes sense."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - datetime.now(UTC).timestamp())
