"""twilio-python's aiohttp client, pointed at ``[whatsapp] api_url`` and honest about 429/5xx.

twilio-python has no base-URL setting (PROTOCOLS §2.6): every product hard-codes
``https://api.twilio.com``. The HTTP client is the one place all its requests pass, so it rewrites
that prefix to the configured URL (a fake in the tests). It also turns 429 and 5xx answers into
:class:`TwilioUnavailable` carrying ``Retry-After``, which ``TwilioRestException`` would drop, and
sends Basic auth as a header (aiohttp 3.14 deprecates the ``BasicAuth`` object twilio builds).
"""

from __future__ import annotations

import base64
import logging
from typing import Any

from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.http.response import Response

from triggers.webhook import retry_after

logger = logging.getLogger(__name__)

TWILIO_API = "https://api.twilio.com"


class TwilioUnavailable(Exception):
    """Twilio answered 429 or 5xx: worth retrying, after ``retry_after`` seconds if it said."""

    def __init__(self, status: int, retry_after: float | None, detail: str) -> None:
        self.status = status
        self.retry_after = retry_after
        super().__init__(f"Twilio answered {status}: {detail}")


class TwilioHttpClient(AsyncTwilioHttpClient):  # type: ignore[misc]  # twilio ships no types
    """``AsyncTwilioHttpClient`` (one pooled aiohttp session) with a base URL and a timeout."""

    def __init__(self, api_url: str, timeout: float) -> None:
        super().__init__(timeout=timeout, logger=logger)
        self._api_url = api_url.rstrip("/")

    async def request(
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> Response:
        if url.startswith(TWILIO_API):
            url = self._api_url + url[len(TWILIO_API) :]
        if auth is not None:
            # The header itself: aiohttp 3.14 deprecates the BasicAuth object twilio would build.
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
            headers = {**(headers or {}), "Authorization": f"Basic {token}"}
        response: Response = await super().request(
            method,
            url,
            params=params,
            data=data,
            headers=headers,
            auth=None,
            timeout=timeout or self.timeout,
            allow_redirects=allow_redirects,
        )
        if response.status_code == 429 or response.status_code >= 500:
            raise TwilioUnavailable(
                response.status_code,
                retry_after((response.headers or {}).get("Retry-After")),
                response.text[:200],
            )
        return response

    def log_request(self, kwargs: dict[str, Any]) -> None:
        logger.debug("Twilio API request: %s %s", kwargs["method"], kwargs["url"])

    def log_response(self, status_code: int, response: Any) -> None:
        logger.debug("Twilio API response: %s", status_code)
