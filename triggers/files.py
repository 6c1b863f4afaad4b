"""File store: ``POST /file`` hands out a signed upload URI and a signed download URI.

The URIs are capabilities (PROTOCOLS part A): the client PUTs without an ``Authorization`` header,
and workflows GET with any HTTP client. Each carries ``expires`` and an HMAC over the method, the
file id and the expiry. Uploads are streamed to disk with a size limit; the content type the
uploader sent is kept and served back.
"""

from __future__ import annotations

import asyncio
import hashlib
import mimetypes
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol
from urllib.parse import parse_qs, quote, unquote, urlsplit

from aiohttp import web
from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite

from core.clock import Clock, isoformat
from core.db import Database
from core.errors import BadRequest, Forbidden, NotFound, PayloadTooLarge
from core.security import Signer
from triggers.file_tables import files

CHUNK = 256 * 1024


class ByteSource(Protocol):
    """What an upload is read from: an aiohttp request body, or a channel's media download."""

    async def read(self, n: int = -1) -> bytes: ...


@dataclass(frozen=True, slots=True)
class StoredFile:
    """A stored file's bytes, read from disk (see :meth:`FileStore.read_signed`)."""

    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True, slots=True)
class Incoming:
    """Bytes a channel received, to keep (an email attachment)."""

    filename: str
    content_type: str | None
    data: bytes


@dataclass(frozen=True, slots=True)
class FileSettings:
    directory: Path
    base_url: str
    max_size: int
    upload_ttl: int
    download_ttl: int


class FileStore:
    """Stored files and the signed URIs that reach them."""

    def __init__(
        self, database: Database, clock: Clock, signer: Signer, settings: FileSettings
    ) -> None:
        self._db = database
        self._clock = clock
        self._signer = signer
        self._settings = settings
        settings.directory.mkdir(mode=0o700, parents=True, exist_ok=True)

    async def create(self, owner_id: str, filename: str) -> dict[str, Any]:
        filename = _clean_filename(filename)
        file_id = "file_" + secrets.token_hex(12)
        async with self._db.write() as conn:
            await conn.execute(
                files.insert().values(
                    id=file_id, owner_id=owner_id, filename=filename, created_at=self._clock.now()
                )
            )
        content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        return {
            "file_id": file_id,
            "upload_uri": self._uri("PUT", file_id, filename, self._settings.upload_ttl),
            "download_uri": self.download_uri(file_id, filename),
            "upload_headers": {"Content-Type": content_type},
            "max_size": self._settings.max_size,
        }

    async def describe(self, owner_id: str, file_id: str) -> dict[str, Any]:
        row = await self._row(file_id)
        if row is None or row["owner_id"] != owner_id:
            raise NotFound("file", file_id)
        return {
            "file_id": file_id,
            "filename": row["filename"],
            "content_type": row["content_type"],
            "size": row["size"],
            "sha256": row["sha256"],
            "createdAt": isoformat(row["created_at"]),
            "uploadedAt": isoformat(row["uploaded_at"]),
            "download_uri": self.download_uri(file_id, row["filename"]),
        }

    def download_uri(self, file_id: str, filename: str) -> str:
        """A signed GET URI for a stored file (also for channels that pass attachments on)."""
        return self._uri("GET", file_id, filename, self._settings.download_ttl)

    def _uri(self, method: str, file_id: str, filename: str, ttl: int) -> str:
        expires = str(int(self._clock.now().timestamp()) + ttl)
        signature = self._signer.sign("file", method, file_id, expires)
        query = f"expires={expires}&sig={signature}"
        return f"{self._settings.base_url}/files/{file_id}/{quote(filename)}?{query}"

    def check_signature(
        self, method: str, file_id: str, expires: str | None, signature: str | None
    ) -> None:
        if not expires or not signature or not (expires.isascii() and expires.isdigit()):
            raise Forbidden("this file URI is not signed: use the URI POST /file returned")
        if not self._signer.verify(signature, "file", method, file_id, expires):
            raise Forbidden("invalid signature for this file URI")
        if int(expires) < self._clock.now().timestamp():
            raise Forbidden("this file URI has expired")

    async def receive(
        self, file_id: str, content_type: str | None, stream: ByteSource, declared: int | None
    ) -> int:
        """Store an upload; the limit is checked on the declared length and on the bytes read."""
        limit = self._settings.max_size
        if declared is not None and declared > limit:
            raise PayloadTooLarge("the upload", limit)
        row = await self._row(file_id)
        if row is None:
            raise NotFound("file", file_id)
        target = self._settings.directory / file_id
        partial = target.with_suffix(f".{secrets.token_hex(4)}.part")
        digest = hashlib.sha256()
        size = 0
        try:
            with _private(partial) as handle:
                while chunk := await stream.read(CHUNK):
                    size += len(chunk)
                    if size > limit:
                        raise PayloadTooLarge("the upload", limit)
                    digest.update(chunk)
                    await asyncio.to_thread(handle.write, chunk)
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
        if not content_type or content_type == "application/octet-stream":
            content_type = mimetypes.guess_type(row["filename"])[0] or "application/octet-stream"
        async with self._db.write() as conn:
            await conn.execute(
                update(files)
                .where(files.c.id == file_id)
                .values(
                    content_type=content_type,
                    size=size,
                    sha256=digest.hexdigest(),
                    uploaded_at=self._clock.now(),
                )
            )
        return size

    async def store(
        self, owner_id: str, filename: str, content_type: str | None, data: bytes
    ) -> tuple[str, str]:
        """Keep bytes a channel received (an attachment); returns the file id and a signed
        download URI. The file is written before its row says it was uploaded."""
        file_id = "file_" + secrets.token_hex(12)
        (url,) = await self._store_as(owner_id, [(file_id, Incoming(filename, content_type, data))])
        return file_id, url

    async def store_all(self, owner_id: str, items: Sequence[Incoming], *, key: str) -> list[str]:
        """Keep all of one event's files in one transaction; their signed download URIs.

        ``key`` names the event (an email's Message-ID): the same event stored again (the
        sender retried a mail we never acknowledged) finds its files instead of adding copies.
        The ids are derived with the server secret, so they are as unguessable as random ones.
        """
        named = []
        for index, item in enumerate(items):
            digest = hashlib.sha256(item.data).hexdigest()
            proof = self._signer.sign("stored-file", owner_id, key, str(index), digest)
            named.append(("file_" + hashlib.sha256(proof.encode()).hexdigest()[:24], item))
        return await self._store_as(owner_id, named)

    async def _store_as(self, owner_id: str, named: Sequence[tuple[str, Incoming]]) -> list[str]:
        for _, item in named:
            if len(item.data) > self._settings.max_size:
                raise PayloadTooLarge(f"the file {item.filename!r}", self._settings.max_size)
        if not named:
            return []
        await asyncio.to_thread(self._write_files, named)
        now = self._clock.now()
        rows = [
            {
                "id": file_id,
                "owner_id": owner_id,
                "filename": _stored_filename(item.filename),
                "content_type": item.content_type or "application/octet-stream",
                "size": len(item.data),
                "sha256": hashlib.sha256(item.data).hexdigest(),
                "created_at": now,
                "uploaded_at": now,
            }
            for file_id, item in named
        ]
        async with self._db.write() as conn:
            dialect = sqlite if conn.dialect.name == "sqlite" else postgresql
            await conn.execute(
                dialect.insert(files).on_conflict_do_nothing(index_elements=["id"]), rows
            )
        return [self.download_uri(str(row["id"]), str(row["filename"])) for row in rows]

    def _write_files(self, named: Sequence[tuple[str, Incoming]]) -> None:
        for file_id, item in named:
            target = self._settings.directory / file_id
            partial = target.with_suffix(f".{secrets.token_hex(4)}.part")
            try:
                with _private(partial) as handle:
                    handle.write(item.data)
                os.replace(partial, target)
            finally:
                partial.unlink(missing_ok=True)

    def file_id_of(self, uri: str, *, allow_expired: bool = False) -> str:
        """The file a signed download URI of this store names (raises :class:`Forbidden`).

        The host is not compared: nothing is fetched, and only our signing key makes a valid
        signature, so the URI names one of our files whatever name the server had when it was
        issued. ``allow_expired`` is for mail already queued: its URIs were checked when it
        was handed over, and a retry two days later must not fail because they have expired.
        """
        url = urlsplit(uri)
        parts = url.path.split("/")
        if url.scheme not in {"http", "https"} or len(parts) < 4 or parts[-3] != "files":
            raise Forbidden(f"{_shown(uri)} is not a download URI of this file store")
        file_id = unquote(parts[-2])
        query = parse_qs(url.query)
        expires = next(iter(query.get("expires") or []), None)
        signature = next(iter(query.get("sig") or []), None)
        if signature is not None and not signature.isascii():  # compare_digest takes ASCII only
            raise Forbidden(f"{_shown(uri)}: invalid signature for this file URI")
        if allow_expired and expires and expires.isdigit() and signature:
            if self._signer.verify(signature, "file", "GET", file_id, expires):
                return file_id
        try:
            self.check_signature("GET", file_id, expires, signature)
        except Forbidden as exc:
            raise Forbidden(f"{_shown(uri)}: {exc.detail}") from exc
        return file_id

    async def read_signed(
        self, uri: str, *, max_size: int, allow_expired: bool = False
    ) -> StoredFile:
        """The bytes behind one of our signed download URIs, read from disk, never over HTTP
        (a URL a workflow hands us must not make the server fetch from its own network)."""
        file_id = self.file_id_of(uri, allow_expired=allow_expired)
        row = await self._row(file_id)
        if row is None or row["uploaded_at"] is None:
            raise NotFound("file", file_id)
        if row["size"] is not None and row["size"] > max_size:
            raise PayloadTooLarge(f"the file {row['filename']!r}", max_size)
        data = await asyncio.to_thread((self._settings.directory / file_id).read_bytes)
        return StoredFile(row["filename"], row["content_type"] or "application/octet-stream", data)

    async def open_for_download(self, file_id: str) -> tuple[Path, str, str]:
        row = await self._row(file_id)
        if row is None or row["uploaded_at"] is None:
            raise NotFound("file", file_id)
        return self._settings.directory / file_id, row["content_type"], row["filename"]

    async def _row(self, file_id: str) -> Any:
        async with self._db.read() as conn:
            return (
                (await conn.execute(select(files).where(files.c.id == file_id))).mappings().first()
            )


def _private(path: Path) -> BinaryIO:
    """A new file only this uid can read (uploads are other people's documents)."""
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb")


def _shown(uri: str) -> str:
    """A URI for messages and logs, without its query (the signature is a capability)."""
    return repr(uri.split("?")[0][:200])


def _stored_filename(filename: str) -> str:
    name = os.path.basename(filename.replace("\\", "/")).strip()[:255]
    return name if name and name not in {".", ".."} else "attachment"


def _clean_filename(filename: str) -> str:
    name = os.path.basename(filename.replace("\\", "/")).strip()
    if not name or name in {".", ".."} or len(name) > 255:
        raise BadRequest("give a file name: POST /file?filename=NAME (≤ 255 characters)")
    return name


class FileRoutes:
    """aiohttp handlers for the signed file URIs."""

    def __init__(self, store: FileStore) -> None:
        self._store = store

    def route_table(self) -> list[web.RouteDef]:
        """The signed URIs' endpoints, bound to this object."""
        return [
            web.put("/files/{file_id}/{filename}", self.upload),
            web.get("/files/{file_id}/{filename}", self.download, allow_head=False),
        ]

    async def upload(self, request: web.Request) -> web.Response:
        file_id = request.match_info["file_id"]
        self._store.check_signature(
            "PUT", file_id, request.query.get("expires"), request.query.get("sig")
        )
        size = await self._store.receive(
            file_id,
            request.content_type if request.body_exists else None,
            request.content,
            request.content_length,
        )
        return web.json_response({"file_id": file_id, "size": size})

    async def download(self, request: web.Request) -> web.StreamResponse:
        file_id = request.match_info["file_id"]
        self._store.check_signature(
            "GET", file_id, request.query.get("expires"), request.query.get("sig")
        )
        path, content_type, filename = await self._store.open_for_download(file_id)
        disposition = "inline" if shown_inline(content_type) else "attachment"
        return web.FileResponse(
            path,
            headers={
                "Content-Type": content_type,
                "Content-Disposition": f"{disposition}; filename*=UTF-8''{quote(filename)}",
            },
        )


INLINE_TYPES = frozenset(
    {
        "image/png",
        "image/jpeg",
        "image/gif",
        "image/webp",
        "image/avif",
        "image/bmp",
        "text/plain",
        "audio/mpeg",
        "audio/ogg",
        "audio/wav",
        "audio/webm",
        "video/mp4",
        "video/webm",
    }
)
"""Types a browser only displays. Anything else (HTML, SVG, XML, PDF, JavaScript…) can carry
script and, served from our origin, would run as our page: those are downloaded instead."""


def shown_inline(content_type: str | None) -> bool:
    """Whether a stored file's type (the uploader's word) may be displayed in the browser."""
    if not content_type or "," in content_type:
        return False
    essence = content_type.split(";", 1)[0].strip().lower()
    return essence in INLINE_TYPES
