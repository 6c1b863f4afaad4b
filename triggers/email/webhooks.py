"""Inbound-parse webhooks for domains whose MX is a provider (PROTOCOLS §3.3, §3.4).

``POST /email/mailgun``: a Mailgun route's ``forward()``. The signature is HMAC-SHA256 (key:
``mailgun_signing_key``) over ``timestamp + token``; a stale timestamp (older than
``mailgun_max_age``) or a token seen before is refused. Tokens are remembered in the database
(the channel's ``email_messages``), so a replay is refused by every node; a token is recorded only
once its mail is stored, so Mailgun's retry of a failed post still gets through. Refusals
answer ``406`` (Mailgun: "rejected, do not retry"); a storage failure answers ``503`` (retried).
A route ending in ``mime`` posts the raw message (``body-mime``); otherwise the mail is rebuilt
from the parsed fields.

``POST /email/sendgrid/<token>`` (or ``/email/sendgrid`` with Basic auth, password = the token):
SendGrid Inbound Parse in "POST the raw, full MIME message" mode (field ``email``). SendGrid has no
"do not retry" status, so a mail our rules refuse is answered ``200`` with ``accepted: false``.
SendGrid posts the message as it arrived: any charset, 8-bit bytes included (PROTOCOLS §3.3:
"fields are not guaranteed UTF-8"). aiohttp's ``post()`` decodes text fields as strict UTF-8 and
would fail such mail with a 500 that SendGrid retries for three days and then drops, so the body
is read part by part as bytes (``multipart/form-data``, or ``x-www-form-urlencoded``) within the
size limit. A body we cannot read is a ``400``; a body over the limit a ``413``; a failure on our
side (storage) a ``503``, which SendGrid retries. Both answer once the mail is in the inbox
(``edge.py``): the mail itself is read in processing.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import BodyPartReader, web
from multidict import MultiDictProxy
from pydantic import SecretStr

from core.clock import Clock
from core.errors import BadRequest
from core.json_input import parse_json
from triggers.email.edge import Admission, Envelope, MailIntake
from triggers.email.settings import EmailSettings
from triggers.email.threads import ThreadStore

logger = logging.getLogger(__name__)

FORM_OVERHEAD = 1024 * 1024  # form encoding and the parsed copies providers send alongside
SENDGRID_FIELDS = frozenset({"email", "envelope"})
"""The fields of a raw-MIME SendGrid post we read; the parsed copies beside them are skipped."""
CHUNK = 64 * 1024


class MalformedForm(ValueError):
    """The request body is not a form we can read."""


_REBUILT_SKIP = frozenset({"content-type", "content-transfer-encoding", "mime-version"})

Form = MultiDictProxy[Any]


def mailgun_signature(key: bytes, timestamp: str, token: str) -> str:
    message = (timestamp + token).encode("utf-8", "surrogateescape")
    return hmac.new(key, message, hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class WebhookParts:
    """What the handlers use, known once the services run (:meth:`EmailWebhooks.bind`)."""

    intake: MailIntake
    threads: ThreadStore
    """Remembers Mailgun tokens (replay protection across nodes)."""
    clock: Clock


class EmailWebhooks:
    """aiohttp handlers for the inbound-parse webhooks.

    The sub-application is built with the server (before it starts), its parts are bound when
    the channel starts: the server takes no request before that.
    """

    def __init__(self, settings: EmailSettings, parts: WebhookParts | None = None) -> None:
        self._settings = settings
        self._parts = parts

    def bind(self, parts: WebhookParts) -> None:
        self._parts = parts

    @property
    def _bound(self) -> WebhookParts:
        if self._parts is None:
            raise RuntimeError("the email webhooks took a request before the channel started")
        return self._parts

    def app(self) -> web.Application:
        """The sub-application mounted at ``/email`` (URLs as before: ``/email/mailgun``…)."""
        app = web.Application()
        app.router.add_post("/mailgun", self.mailgun)
        app.router.add_post("/sendgrid", self.sendgrid)
        app.router.add_post("/sendgrid/{token}", self.sendgrid)
        return app

    @property
    def _body_limit(self) -> int:
        # The app's client_max_size is for API calls; mail may be larger (SendGrid: up to 30 MB).
        return self._settings.max_size * 2 + FORM_OVERHEAD

    async def _form(self, request: web.Request) -> Form:
        larger = request.clone(client_max_size=self._body_limit)
        try:
            return await larger.post()
        except web.HTTPException:
            raise
        except (
            ValueError,
            UnicodeError,
            LookupError,
        ) as exc:  # bad bytes or charset, broken multipart
            raise BadRequest(f"unreadable form: {type(exc).__name__}") from exc

    async def mailgun(self, request: web.Request) -> web.Response:
        if self._settings.mailgun_signing_key is None:
            raise web.HTTPNotFound(text="Mailgun intake is off: set [email] mailgun_signing_key")
        form = await self._form(request)
        try:
            return await self._mailgun(form, self._settings.mailgun_signing_key)
        finally:
            _close_files(form)

    async def sendgrid(self, request: web.Request) -> web.Response:
        if self._settings.sendgrid_token is None:
            raise web.HTTPNotFound(text="SendGrid intake is off: set [email] sendgrid_token")
        expected = self._settings.sendgrid_token.get_secret_value().encode()
        given = (request.match_info.get("token") or _basic_password(request) or "").encode()
        if not hmac.compare_digest(given, expected):
            return web.json_response(
                {"detail": "unknown SendGrid token"},
                status=401,
                headers={"WWW-Authenticate": 'Basic realm="switchboard"'},
            )
        try:
            fields = await read_raw_fields(request, SENDGRID_FIELDS, limit=self._body_limit)
        except MalformedForm as exc:
            return web.json_response({"detail": str(exc)}, status=400)
        return await self._sendgrid(fields)

    async def _mailgun(self, form: Form, signing_key: SecretStr) -> web.Response:
        timestamp, token = _text(form, "timestamp"), _text(form, "token")
        key = signing_key.get_secret_value().encode()
        expected = mailgun_signature(key, timestamp, token).encode()
        # As bytes: compare_digest refuses a str with non-ASCII characters (TypeError, a 500).
        given = _text(form, "signature").encode("utf-8", "surrogateescape")
        if not token or not hmac.compare_digest(expected, given):
            return _mailgun_refusal("invalid signature")
        now = self._bound.clock.now().timestamp()
        if (
            not (timestamp.isascii() and timestamp.isdigit())
            or abs(now - int(timestamp)) > self._settings.mailgun_max_age
        ):
            return _mailgun_refusal("stale timestamp")
        if await self._bound.threads.seen_token(token):
            return _mailgun_refusal("token already used (replayed request)")
        raw = _file_or_text(form, "body-mime") or _rebuild_mailgun(form)
        recipients = [r.strip() for r in _text(form, "recipient").split(",") if r.strip()]
        try:
            result = await self._bound.intake.accept(
                raw,
                Envelope(mail_from=_mailgun_sender(form), recipients=recipients, via="mailgun"),
            )
        except Exception:
            logger.exception("storing a Mailgun mail failed; Mailgun will retry")
            return web.json_response({"detail": "temporary failure, retry"}, status=503)
        await self._bound.threads.remember_token(token)
        if result.rejected:
            return _mailgun_refusal(result.reason)
        return _accepted(result)

    async def _sendgrid(self, fields: dict[str, bytes]) -> web.Response:
        raw = fields.get("email")
        if raw is None:
            return web.json_response(
                {"detail": "turn on 'POST the raw, full MIME message' in SendGrid Inbound Parse"},
                status=400,
            )
        if len(raw) > self._settings.max_size:
            return web.json_response(
                {"detail": f"the message is larger than {self._settings.max_size} bytes"},
                status=413,
            )
        try:
            envelope = parse_json(fields.get("envelope", b"{}"), what="'envelope'")
        except ValueError:
            envelope = {}
        if not isinstance(envelope, dict):
            envelope = {}
        to = envelope.get("to")
        sender = envelope.get("from")
        try:
            result = await self._bound.intake.accept(
                raw,
                Envelope(
                    mail_from=sender if isinstance(sender, str) else None,
                    recipients=[str(r) for r in to] if isinstance(to, list) else [],
                    via="sendgrid",
                ),
            )
        except Exception:
            logger.exception("storing a SendGrid mail failed; SendGrid will retry")
            return web.json_response({"detail": "temporary failure, retry"}, status=503)
        if result.rejected:
            return web.json_response({"accepted": False, "detail": result.reason})
        return _accepted(result)


async def read_raw_fields(
    request: web.Request, wanted: frozenset[str], *, limit: int
) -> dict[str, bytes]:
    """The ``wanted`` fields of a form post as bytes, undecoded (the first of each name).

    Reads ``multipart/form-data`` part by part and ``x-www-form-urlencoded`` as bytes, never
    more than ``limit`` bytes in all (``413`` beyond); raises :class:`MalformedForm` for a body
    that is no such form.
    """
    if request.content_length is not None and request.content_length > limit:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=request.content_length)
    fields: dict[str, bytes] = {}
    if request.content_type == "application/x-www-form-urlencoded":
        body = await _read_limited(request, limit)
        pairs = parse_qsl(body.decode("latin-1"), keep_blank_values=True, encoding="latin-1")
        for name, value in pairs:
            if name in wanted:
                fields.setdefault(name, value.encode("latin-1"))
        return fields
    if request.content_type != "multipart/form-data":
        raise MalformedForm(f"expected multipart/form-data, got {request.content_type}")
    total = 0
    try:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                raise MalformedForm("nested multipart parts are not a form")
            data = bytearray()
            while chunk := await part.read_chunk(CHUNK):
                total += len(chunk)
                if total > limit:
                    raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=total)
                if part.name in wanted:
                    data += chunk
            if part.name in wanted and part.name not in fields:
                fields[part.name] = bytes(part.decode(bytes(data)))
    except (web.HTTPException, MalformedForm):
        raise
    except Exception as exc:  # aiohttp's multipart errors are ValueError, AssertionError, …
        raise MalformedForm(f"unreadable multipart body: {type(exc).__name__}") from exc
    return fields


async def _read_limited(request: web.Request, limit: int) -> bytes:
    body = bytearray()
    while chunk := await request.content.read(CHUNK):
        body += chunk
        if len(body) > limit:
            raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=len(body))
    return bytes(body)


def _accepted(result: Admission) -> web.Response:
    return web.json_response({"accepted": True, "outcome": result.outcome.value, "id": result.id})


def _mailgun_sender(form: Form) -> str | None:
    """The envelope sender: ``""`` for the null sender (a bounce: Mailgun sends an empty or
    ``<>`` ``sender``), so the loop rules see it; ``None`` only when the field is missing."""
    sender = form.get("sender")
    if not isinstance(sender, str):
        return None
    return sender.strip().strip("<>").strip()


def _mailgun_refusal(reason: str) -> web.Response:
    return web.json_response({"detail": reason}, status=406)


def _text(form: Form, name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


def _file_or_text(form: Form, name: str) -> bytes | None:
    value = form.get(name)
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape")
    if isinstance(value, web.FileField):
        data: bytes = value.file.read()
        return data
    return None


def _close_files(form: Form) -> None:
    for value in form.values():
        if isinstance(value, web.FileField):
            value.file.close()


def _basic_password(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    if not header.lower().startswith("basic "):
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
    except (binascii.Error, ValueError):  # not base64, not ASCII (b64decode), not UTF-8
        return None
    return decoded.partition(":")[2]


def _rebuild_mailgun(form: Form) -> bytes:
    """A MIME message from Mailgun's parsed fields (headers, text, HTML, attachments)."""
    message = EmailMessage()
    try:
        headers = parse_json(_text(form, "message-headers") or "[]", what="'message-headers'")
    except ValueError:
        headers = []
    for pair in headers if isinstance(headers, list) else []:
        if not (
            isinstance(pair, list) and len(pair) == 2 and all(isinstance(p, str) for p in pair)
        ):
            continue
        name, value = pair
        if name.lower() in _REBUILT_SKIP:
            continue
        try:
            message[name] = value
        except (ValueError, TypeError, IndexError):
            logger.debug("Mailgun header %s could not be kept", name)
    for name, header in (("from", "From"), ("subject", "Subject")):
        if header not in message and _text(form, name):
            message[header] = _text(form, name)
    message.set_content(_text(form, "body-plain") or " ")
    if _text(form, "body-html"):
        message.add_alternative(_text(form, "body-html"), subtype="html")
    count = _text(form, "attachment-count")
    for index in range(1, (int(count) if count.isdigit() else 0) + 1):
        value = form.get(f"attachment-{index}")
        if isinstance(value, web.FileField):
            maintype, _, subtype = (value.content_type or "application/octet-stream").partition("/")
            message.add_attachment(
                value.file.read(),
                maintype=maintype,
                subtype=subtype or "octet-stream",
                filename=value.filename,
            )
    return message.as_bytes()
