"""The Twilio edge: ``POST /twilio/whatsapp`` (messages in) and ``POST /twilio/status``.

Both are signed by Twilio (PROTOCOLS §2.2): the signature covers the URL Twilio requested and every
POST parameter. Behind a proxy the URL aiohttp reconstructs is not that URL (scheme, host, port),
so it is rebuilt from ``[server] public_url`` plus the raw path and query of the request. A request
that fails the check gets 403 and nothing is stored.

The ack path does only this: check the signature over the raw form, compute the two keys, write
the raw body to the inbox (:meth:`core.inbox.Inbox.accept`, committed before it returns) and
answer — an empty TwiML ``<Response/>`` (never plain text: Twilio would send it to the user), 204
for a status callback. Twilio retries a message it got no answer for within 15 s (PROTOCOLS §2.3);
the retry has the same ``MessageSid``, hence the same dedupe key, and is answered like the first.
Routing, media downloads and the message log are the processor's (process.py).
"""

from __future__ import annotations

import hmac
import logging
from typing import Any

from aiohttp import web
from multidict import MultiDict, MultiDictProxy
from twilio.request_validator import RequestValidator

from core.errors import BadRequest, Forbidden
from core.inbox import ArrivingEvent, Inbox
from triggers.whatsapp.parse import chat_key, form_pairs
from triggers.whatsapp.process import MESSAGE, STATUS, WEBHOOK_HEADER

logger = logging.getLogger(__name__)

TRIGGER = "whatsapp"
PREFIX = "/twilio"
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'
SIGNATURE_HEADER = "X-Twilio-Signature"

Form = MultiDictProxy[Any]


class TwilioSignature:
    """Checks ``X-Twilio-Signature`` against the public URL of the request."""

    def __init__(self, auth_token: str, public_url: str) -> None:
        self._validator = RequestValidator(auth_token)
        self._base = public_url.rstrip("/")

    def check(self, request: web.Request, form: Form) -> None:
        signature = request.headers.get(SIGNATURE_HEADER)
        if not signature:
            raise Forbidden(f"missing {SIGNATURE_HEADER}: only Twilio may post here")
        url = self._base + request.raw_path
        if not url.isascii():  # Twilio requests percent-encoded URLs; no signature covers this
            raise Forbidden(f"invalid {SIGNATURE_HEADER}: the request URL is not ASCII")
        # The common case costs one HMAC; ``validate`` then also tries the URL with and without
        # its default port (Twilio is not consistent about it) before refusing.
        expected = self._validator.compute_signature(url, form)
        if hmac.compare_digest(expected.encode(), signature.encode("utf-8", "surrogateescape")):
            return
        if not self._validator.validate(url, form, signature):
            raise Forbidden(
                f"invalid {SIGNATURE_HEADER} for {url}: the request was not signed by Twilio with "
                "[whatsapp] auth_token for this URL (check [server] public_url)"
            )


class WhatsAppEdge:
    """The two Twilio webhooks as an aiohttp sub-application (mounted at :data:`PREFIX`)."""

    def __init__(self, inbox: Inbox, signature: TwilioSignature) -> None:
        self._inbox = inbox
        self._signature = signature

    def app(self) -> web.Application:
        """The sub-application; its only resource is the inbox it is given (none to clean up)."""
        edge = web.Application()
        edge.router.add_post("/whatsapp", self.accept_message)
        edge.router.add_post("/status", self.accept_status)
        return edge

    async def accept_message(self, request: web.Request) -> web.Response:
        raw, form = await twilio_form(request)
        self._signature.check(request, form)
        sid = _field(form, "MessageSid") or _field(form, "SmsMessageSid")
        user, ours = _field(form, "From"), _field(form, "To")
        if not sid or not user or not ours:
            raise BadRequest("not a Twilio message: MessageSid, From and To are required")
        accepted = await self._inbox.accept(
            ArrivingEvent(
                trigger=TRIGGER,
                ordering_key=chat_key(ours, user),  # one chat's messages run in arrival order
                body=raw,
                dedupe_key=f"whatsapp:{sid}",  # PROTOCOLS §2.3: a retry repeats the MessageSid
                headers={WEBHOOK_HEADER: MESSAGE},
            )
        )
        if accepted.duplicate:
            logger.info("WhatsApp message %s was accepted before (event %s)", sid, accepted.id)
        return twiml()

    async def accept_status(self, request: web.Request) -> web.Response:
        raw, form = await twilio_form(request)
        self._signature.check(request, form)
        sid, status = _field(form, "MessageSid"), _field(form, "MessageStatus")
        if sid and status:
            # Each transition once (PROTOCOLS §2.5: callbacks may repeat and arrive out of order;
            # the message log keeps the highest).
            await self._inbox.accept(
                ArrivingEvent(
                    trigger=TRIGGER,
                    ordering_key=f"whatsapp:{sid}",
                    body=raw,
                    dedupe_key=f"whatsapp:{sid}:{status}",
                    headers={WEBHOOK_HEADER: STATUS},
                )
            )
        return web.Response(status=204)


def _field(form: Form, name: str) -> str | None:
    value = form.get(name)
    return value if isinstance(value, str) and value else None


async def twilio_form(request: web.Request) -> tuple[bytes, Form]:
    """The raw bytes of a Twilio webhook post and its parameters.

    Twilio posts ``application/x-www-form-urlencoded`` in UTF-8 (PROTOCOLS §2.2). aiohttp's
    ``post()`` would also take multipart files and any charset, and fail with a 500 on bytes it
    cannot decode; here anything else is a 400, before the signature is checked or anything stored.
    """
    if request.content_type != "application/x-www-form-urlencoded":
        raise BadRequest(
            f"Twilio posts application/x-www-form-urlencoded, not {request.content_type}"
        )
    charset = (request.charset or "utf-8").lower()
    if charset not in {"utf-8", "utf8"}:
        raise BadRequest(f"Twilio posts UTF-8 forms, not charset {request.charset!r}")
    raw = await request.read()
    try:
        return raw, MultiDictProxy(MultiDict(form_pairs(raw)))
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadRequest(f"the form is not URL-encoded UTF-8: {exc}") from exc


def twiml() -> web.Response:
    return web.Response(text=EMPTY_TWIML, content_type="text/xml")
