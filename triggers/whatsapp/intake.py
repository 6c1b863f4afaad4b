"""``POST /twilio/whatsapp`` (messages in) and ``POST /twilio/status`` (delivery status).

Both are signed by Twilio (PROTOCOLS §2.2): the signature covers the URL Twilio requested and every
POST parameter. Behind a proxy the URL aiohttp reconstructs is not that URL (scheme, host, port),
so it is rebuilt from ``[server] public_url`` plus the raw path and query of the request. A request
that fails the check gets 403 and nothing is stored.

A message is persisted — its run request, deduplicated on ``MessageSid`` because Twilio retries
after connection failures — before Twilio gets its answer, an empty TwiML ``<Response/>`` (never
plain text: Twilio would send it to the user). A message with media is persisted as a held run
and answered at once too; its media is fetched afterwards (held.py), so neither the answer nor the
chat's order waits on a download. The reply goes later, through the outbox.
"""

from __future__ import annotations

import hmac
import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web
from multidict import MultiDict, MultiDictProxy
from twilio.request_validator import RequestValidator

from core.clock import Clock
from core.errors import BadRequest, Forbidden
from core.messages import run_request_for
from core.models import ReplyTarget
from core.ports import RunGateway
from triggers.whatsapp.held import HeldMessages
from triggers.whatsapp.parse import chat_key, inbound_message, media_items, route_message
from triggers.whatsapp.settings import WhatsAppSettings
from triggers.whatsapp.status import MessageLog

logger = logging.getLogger(__name__)

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


@dataclass(frozen=True, slots=True)
class WhatsAppIntake:
    """The two Twilio webhooks (handlers for ``switchboard.app``)."""

    settings: WhatsAppSettings
    signature: TwilioSignature
    gateway: RunGateway
    held: HeldMessages
    log: MessageLog
    clock: Clock

    async def accept_message(self, request: web.Request) -> web.Response:
        form = await twilio_form(request)
        self.signature.check(request, form)
        params = {name: value for name, value in form.items() if isinstance(value, str)}
        sid = params.get("MessageSid") or params.get("SmsMessageSid")
        user, ours = params.get("From"), params.get("To")
        if not sid or not user or not ours:
            raise BadRequest("not a Twilio message: MessageSid, From and To are required")
        routed = route_message(self.settings, ours, params.get("Body", ""))
        if routed is None:
            logger.warning(
                "WhatsApp message %s to %s matches no route and [whatsapp] workflow is not set: "
                "ignored",
                sid,
                ours,
            )
            return twiml()
        media = media_items(params)
        message = inbound_message(params, routed, attachments=(), received_at=self.clock.now())
        run_request = run_request_for(
            message,
            owner_id=self.settings.owner,
            workflow=routed.workflow,
            fixed_inputs=routed.inputs,
            reply_target=ReplyTarget(
                channel="whatsapp", address=user, details={"from": ours, "message_sid": sid}
            ),
            idempotency_key=f"whatsapp:{sid}",
            serial_key=chat_key(ours, user),
            held=bool(media),
        )
        submitted = await self.gateway.submit(run_request)
        if media and submitted.created:
            self.held.release_later(submitted.id, run_request)
        if not submitted.created:
            logger.info("WhatsApp message %s was accepted before (run %s)", sid, submitted.id)
        return twiml()

    async def accept_status(self, request: web.Request) -> web.Response:
        form = await twilio_form(request)
        self.signature.check(request, form)
        sid, status = form.get("MessageSid"), form.get("MessageStatus")
        if isinstance(sid, str) and isinstance(status, str):
            error = form.get("ErrorCode")
            error_code = error if isinstance(error, str) and error else None
            if not await self.log.apply_status(sid, status, error_code):
                logger.debug("status %s for WhatsApp message %s not applied", status, sid)
            if error_code:
                logger.warning("WhatsApp message %s: %s, error %s", sid, status, error_code)
        return web.Response(status=204)


async def twilio_form(request: web.Request) -> Form:
    """The parameters of a Twilio webhook post, read from the raw bytes.

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
        pairs = parse_qsl(raw.decode("utf-8"), keep_blank_values=True, errors="strict")
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadRequest(f"the form is not URL-encoded UTF-8: {exc}") from exc
    return MultiDictProxy(MultiDict(pairs))


def twiml() -> web.Response:
    return web.Response(text=EMPTY_TWIML, content_type="text/xml")
