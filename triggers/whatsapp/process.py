"""The ``whatsapp`` trigger's processing: a stored Twilio post → its run, or a status applied.

The inbox processor calls :meth:`WhatsAppProcessor.process` one event at a time per chat, in
arrival order, so a message with media keeps its place: its media is downloaded here (bounded by
``[whatsapp] media_timeout``; a file that cannot be fetched does not cost the message, the run
goes with ``event.media_errors``) while the chat's later messages wait behind it, and Twilio was
answered long before. The run request carries the ``MessageSid`` idempotency key and the chat's
serial key: processing the event again (a crash, a retry) makes no second run, and the chat's runs
execute one at a time. The run row is the 24-hour window's bookkeeping (window.py): it is written
in the transaction that marks the event processed.

A status callback makes no run: it moves the message log forward (message_log.py).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from core.inbox import Ignored, ProcessingResult, StoredEvent
from core.messages import run_request_for
from core.models import ReplyTarget
from triggers.whatsapp.media import MediaDownloads, MediaFetcher
from triggers.whatsapp.message_log import MessageLog
from triggers.whatsapp.parse import (
    chat_key,
    form_pairs,
    inbound_message,
    media_items,
    route_message,
)
from triggers.whatsapp.settings import WhatsAppSettings

logger = logging.getLogger(__name__)

WEBHOOK_HEADER = "twilio-webhook"
"""Set by the edge on each event it stores: ``message`` or ``status``."""
MESSAGE, STATUS = "message", "status"
NO_ROUTE = "matches no [[whatsapp.routes]] entry and [whatsapp] workflow is not set"


class WhatsAppProcessor:
    """:class:`core.inbox.EventProcessor` for the trigger ``whatsapp``."""

    def __init__(
        self,
        settings: WhatsAppSettings,
        media: MediaFetcher,
        log: MessageLog,
        ensure_owner: Callable[[str], Awaitable[object]],
    ) -> None:
        self._settings = settings
        self._media = media
        self._log = log
        self._ensure_owner = ensure_owner
        self._owner_ready = False

    async def process(self, event: StoredEvent) -> ProcessingResult:
        params = dict(form_pairs(event.body))  # checked by the edge before it was stored
        if event.headers.get(WEBHOOK_HEADER) == STATUS:
            await self._apply_status(params)
            return ()
        return await self._message(event, params)

    async def _message(self, event: StoredEvent, params: dict[str, str]) -> ProcessingResult:
        sid = params.get("MessageSid") or params.get("SmsMessageSid") or ""
        user, ours = params.get("From", ""), params.get("To", "")
        routed = route_message(self._settings, ours, params.get("Body", ""))
        if routed is None:
            logger.warning("WhatsApp message %s to %s %s: ignored", sid, ours, NO_ROUTE)
            return Ignored(f"sent to {ours}, which {NO_ROUTE}")
        if not self._owner_ready:  # the owner of the runs messages make (once per process)
            await self._ensure_owner(self._settings.owner)
            self._owner_ready = True
        media = media_items(params)
        downloads = await self._media.fetch_all(media) if media else MediaDownloads([], [])
        if downloads.errors:
            logger.warning(
                "WhatsApp message %s: media missing, the run goes without it: %s",
                sid,
                "; ".join(downloads.errors),
            )
        message = inbound_message(
            params,
            routed,
            attachments=downloads.attachments,
            received_at=event.received_at,
            media_errors=downloads.errors,
        )
        key = f"whatsapp:{sid}"
        if event.replay_of is not None:
            key += f":replay:{event.id}"  # a replay is a new run
        return [
            run_request_for(
                message,
                owner_id=self._settings.owner,
                workflow=routed.workflow,
                fixed_inputs=routed.inputs,
                reply_target=ReplyTarget(
                    channel="whatsapp", address=user, details={"from": ours, "message_sid": sid}
                ),
                idempotency_key=key,
                serial_key=chat_key(ours, user),
            )
        ]

    async def _apply_status(self, params: dict[str, str]) -> None:
        sid, status = params.get("MessageSid", ""), params.get("MessageStatus", "")
        error_code = params.get("ErrorCode") or None
        if not await self._log.apply_status(sid, status, error_code):
            logger.debug("status %s for WhatsApp message %s not applied", status, sid)
        if error_code:
            logger.warning("WhatsApp message %s: %s, error %s", sid, status, error_code)
