"""Inbound media: Twilio's ``MediaUrlN`` downloaded into our file store.

Twilio's media URLs need HTTP Basic auth (AccountSid:AuthToken) and redirect to a short-lived CDN
URL (PROTOCOLS §2.1), so they are no use to a workflow as they are: each file is fetched (all of a
message's files at once, bounded by ``media_timeout``) and stored behind a signed download URI.
This happens after the ack, when the inbox processes the message (process.py); text-only messages
skip all of this. A file that cannot be fetched does not cost the message: the run still starts, and
``event.media_errors`` says what was missing. The credentials go only to Twilio: a media URL
must be https on ``twilio.com`` (or ``[whatsapp] api_url``'s scheme, host and port, a fake in
tests), and httpx drops the ``Authorization`` header on a redirect to another origin (the CDN).
"""

from __future__ import annotations

import asyncio
import logging
import mimetypes
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import httpx

from core.addresses import is_provider_url
from core.errors import PayloadTooLarge
from core.messages import Attachment
from triggers.files import FileStore

logger = logging.getLogger(__name__)

TWILIO_DOMAINS = ("twilio.com",)


class _Chunks:
    """An httpx byte stream seen as the file store's ``ByteSource``."""

    def __init__(self, chunks: AsyncIterator[bytes]) -> None:
        self._chunks = chunks

    async def read(self, n: int = -1) -> bytes:
        return await anext(self._chunks, b"")


@dataclass(frozen=True, slots=True)
class MediaDownloads:
    attachments: list[Attachment]
    errors: list[str]


class MediaFetcher:
    """Fetches a message's media with the account's credentials into the file store."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        files: FileStore,
        *,
        account_sid: str,
        auth_token: str,
        owner_id: str,
        timeout: float,
        api_url: str,
    ) -> None:
        self._api_url = api_url
        self._http = http
        self._files = files
        self._auth = httpx.BasicAuth(account_sid, auth_token)
        self._owner = owner_id
        self._timeout = timeout

    async def fetch_all(self, items: Sequence[tuple[str, str]]) -> MediaDownloads:
        """Every ``(url, content_type)`` stored, in order; failures reported, not raised."""
        if not items:
            return MediaDownloads([], [])
        tasks = [
            asyncio.ensure_future(self._fetch(index, url, content_type))
            for index, (url, content_type) in enumerate(items)
        ]
        pending: set[asyncio.Future[Attachment]] = set(tasks)
        try:
            _, pending = await asyncio.wait(tasks, timeout=self._timeout)
        finally:
            # Also when this processing is cancelled (the node stops): no download may outlive
            # it, still writing into the file store, its error never read.
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        attachments: list[Attachment] = []
        errors: list[str] = []
        for index, task in enumerate(tasks):
            if task in pending:
                errors.append(f"MediaUrl{index}: not downloaded within {self._timeout:g} s")
            elif (exc := task.exception()) is not None:
                errors.append(f"MediaUrl{index}: {exc}")
            else:
                attachments.append(task.result())
        return MediaDownloads(attachments, errors)

    async def _fetch(self, index: int, url: str, content_type: str) -> Attachment:
        extension = mimetypes.guess_extension(content_type.split(";")[0].strip()) or ""
        filename = f"media-{index}{extension}"
        if not is_provider_url(url, domains=TWILIO_DOMAINS, api_url=self._api_url):
            raise MediaError("not a Twilio media URL (https://…twilio.com); not downloaded")
        try:
            async with self._http.stream("GET", url, auth=self._auth) as response:
                if response.status_code != 200:
                    raise MediaError(f"{url} answered {response.status_code}")
                created = await self._files.create(self._owner, filename)
                declared = response.headers.get("Content-Length")
                size = await self._files.receive(
                    created["file_id"],
                    response.headers.get("Content-Type") or content_type,
                    _Chunks(response.aiter_bytes()),
                    int(declared) if declared and declared.isdigit() else None,
                )
        except httpx.HTTPError as exc:
            logger.warning("WhatsApp media %s could not be downloaded: %s", url, exc)
            raise MediaError(f"download failed: {type(exc).__name__}") from exc
        except PayloadTooLarge as exc:
            raise MediaError(exc.detail) from exc
        return Attachment(
            filename=filename, content_type=content_type, size=size, url=created["download_uri"]
        )


class MediaError(Exception):
    """An inbound media file could not be fetched."""
