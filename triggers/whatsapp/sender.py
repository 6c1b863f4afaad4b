"""Replies to WhatsApp through Twilio's Messages API (implements ``core.ports.Sender``).

From the number that received the user's message (``target.details.from``, else
``[whatsapp] from_number``) to the user (``target.address``). Inside the 24-hour window the
reply goes as free-form messages (text parts, then one per attachment); outside it as the
configured template, or not at all: the delivery fails with a clear error. Each message Twilio
accepts is recorded at once (``MessageLog``), so a retry — after a 429/5xx, or after a crash in
the middle of a multi-part reply — resumes after the parts already sent.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import aiohttp
from twilio.base import values as twilio_values
from twilio.base.exceptions import TwilioRestException
from twilio.rest import Client

from core.clock import Clock
from core.ports import ChatActivity
from core.replies import Delivery, Reply, SendResult
from triggers.whatsapp.message_log import MessageLog
from triggers.whatsapp.render import OutboundMessage, session_messages, template_message
from triggers.whatsapp.settings import WhatsAppSettings, whatsapp_address
from triggers.whatsapp.twilio_http import TwilioUnavailable
from triggers.whatsapp.window import last_inbound_at

logger = logging.getLogger(__name__)

_UNSET = twilio_values.unset
OUTSIDE_WINDOW = "outside WhatsApp's 24-hour window and no template configured"


class WhatsAppSender:
    """Sends deliveries of the ``whatsapp`` channel with twilio-python's async client."""

    def __init__(
        self,
        client: Client,
        settings: WhatsAppSettings,
        chats: ChatActivity,
        clock: Clock,
        log: MessageLog,
        *,
        status_callback: str | None,
    ) -> None:
        self._client = client
        self._settings = settings
        self._chats = chats
        self._clock = clock
        self._log = log
        self._status_callback = status_callback

    async def send(self, delivery: Delivery) -> SendResult:
        reply = delivery.reply
        if reply is None:
            return SendResult.sent()
        user = str(delivery.target.get("address") or "")
        details: Mapping[str, Any] = delivery.target.get("details") or {}
        sender = str(details.get("from") or self._settings.from_number or "")
        if not user or not sender:
            return SendResult.failed(
                "WhatsApp reply has no recipient or no sender: set the target's address and "
                "details.from, or [whatsapp] from_number"
            )
        user, sender = whatsapp_address(user), whatsapp_address(sender)
        done = max(delivery.progress, await self._log.parts_sent(delivery.id))
        plan = await self._plan(delivery, reply, sender, user, done)
        if isinstance(plan, str):
            return SendResult.failed(plan, progress=done)
        sid: str | None = None
        total = done + len(plan)
        if delivery.in_doubt and plan:
            adopted = await self._adopt_interrupted(delivery, sender, user, plan, done)
            plan, done = plan[adopted:], done + adopted
        for part, outbound in enumerate(plan, done):
            try:
                sid, status = await self._create(sender, user, outbound)
            except TwilioUnavailable as exc:
                return SendResult.retry(str(exc), after=exc.retry_after, progress=part)
            except TwilioRestException as exc:
                detail = str(exc.msg).removeprefix("Unable to create record: ")
                error = f"Twilio error {exc.code}: {detail}"
                if exc.status == 429 or exc.status >= 500:
                    return SendResult.retry(error, progress=part)
                return SendResult.failed(error, progress=part)
            except (aiohttp.ClientError, TimeoutError) as exc:
                return SendResult.retry(f"Twilio unreachable: {type(exc).__name__}", progress=part)
            await self._log.record_sent(delivery.id, part, sid, status)
            logger.info(
                "delivery %s (run %s): WhatsApp message %d/%d sent as %s",
                delivery.id,
                delivery.run_id,
                part + 1,
                total,
                sid,
            )
        return SendResult.sent(sid, progress=total)

    async def _adopt_interrupted(
        self,
        delivery: Delivery,
        sender: str,
        user: str,
        plan: list[OutboundMessage],
        done: int,
    ) -> int:
        """How many of ``plan``'s first messages Twilio already has from an attempt that died
        between Twilio's answer and :meth:`MessageLog.record_sent` (recorded now).

        The Messages API has no idempotency key, so ask it: a message from our number to this
        user that no delivery recorded can only be this delivery's (replies to one chat go one
        delivery at a time, each message recorded at once); one whose body is the next part's
        is that part. A list that cannot be read says nothing: the parts are sent again."""
        try:
            recent = await self._client.messages.list_async(to=user, from_=sender, limit=20)
        except (TwilioRestException, TwilioUnavailable, aiohttp.ClientError, TimeoutError) as exc:
            logger.warning(
                "delivery %s (run %s): could not look for messages already sent: %r",
                delivery.id,
                delivery.run_id,
                exc,
            )
            return 0
        known = await self._log.known([str(message.sid) for message in recent])
        unknown = [m for m in reversed(recent) if str(m.sid) not in known]  # oldest first
        adopted = 0
        for message in unknown:
            if adopted < len(plan) and message.body == plan[adopted].body:
                status = str(message.status or "queued")
                await self._log.record_sent(delivery.id, done + adopted, str(message.sid), status)
                adopted += 1
        if adopted:
            logger.info(
                "delivery %s (run %s): %d WhatsApp message(s) were sent by an interrupted attempt",
                delivery.id,
                delivery.run_id,
                adopted,
            )
        return adopted

    async def _plan(
        self, delivery: Delivery, reply: Reply, sender: str, user: str, done: int
    ) -> list[OutboundMessage] | str:
        """The messages still to send after the ``done`` first, or why none may be sent.

        Inside the window: the reply's remaining parts. Outside it: the template alone, also
        when the window closed between two parts of this reply (a retry after a 429, say): the
        rest cannot go as free-form messages, so the template carries the answer instead.
        """
        session = session_messages(reply)
        if done and done >= len(session):
            return []  # every part went before a crash kept the outbox from recording it
        last = await last_inbound_at(self._chats, sender, user)
        window = timedelta(hours=self._settings.window_hours)
        if last is not None and self._clock.now() - last < window:
            return session[done:]
        if self._settings.template_sid is None:
            if not done:
                return OUTSIDE_WINDOW
            return (
                f"WhatsApp's 24-hour window closed after {done} of the reply's {len(session)} "
                "messages were sent; the rest was not sent and no template is configured"
            )
        if done:
            logger.warning(
                "delivery %s (run %s): WhatsApp's window closed after %d of %d messages; "
                "sending the template instead of the rest",
                delivery.id,
                delivery.run_id,
                done,
                len(session),
            )
        return [
            template_message(
                reply,
                self._settings.template_sid,
                self._settings.template_variables,
                run_id=delivery.run_id,
                workflow=str(delivery.record.get("service_id") or ""),
            )
        ]

    async def _create(self, sender: str, user: str, message: OutboundMessage) -> tuple[str, str]:
        created = await self._client.messages.create_async(
            from_=sender,
            to=user,
            body=message.body or _UNSET,
            media_url=[message.media_url] if message.media_url else _UNSET,
            content_sid=message.content_sid or _UNSET,
            content_variables=message.content_variables or _UNSET,
            status_callback=self._status_callback or _UNSET,
        )
        return str(created.sid), str(created.status or "queued")
