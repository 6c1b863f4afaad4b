"""A Twilio WhatsApp webhook's parameters → the workflow to run and the message it gets.

Pure functions: no I/O. The parameters are the decoded form fields of the signed POST
(PROTOCOLS §2.1); every one of them is kept in ``event`` (Twilio adds fields without notice:
location ``Latitude``/``Longitude``/``Address``/``Label``, ``ButtonText``/``ButtonPayload``,
``OriginalRepliedMessageSid``, ``Referral*``…).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from core.messages import Attachment, Conversation, InboundMessage, Person
from core.whatsapp_settings import WhatsAppRoute, WhatsAppSettings, whatsapp_address


@dataclass(frozen=True, slots=True)
class RoutedMessage:
    """Where a message goes: the workflow, the text it sees (keyword removed), fixed inputs."""

    workflow: str
    text: str
    inputs: dict[str, Any] = field(default_factory=dict)


def route_message(settings: WhatsAppSettings, to: str, body: str) -> RoutedMessage | None:
    """The first ``[[whatsapp.routes]]`` entry that matches, else ``[whatsapp] workflow``.

    A route matches when its ``to`` (if any) is the receiving number and its ``keyword`` (if any)
    is the message's first word, compared case-insensitively; the keyword is removed from the text.
    """
    receiving = whatsapp_address(to) if to else ""
    first, _, rest = body.strip().partition(" ") if body.strip() else ("", "", "")
    for route in settings.routes:
        if not _matches(route, receiving, first):
            continue
        text = rest.strip() if route.keyword is not None else body.strip()
        return RoutedMessage(route.workflow, text, dict(route.inputs))
    if settings.workflow is not None:
        return RoutedMessage(settings.workflow, body.strip())
    return None


def _matches(route: WhatsAppRoute, receiving: str, first_word: str) -> bool:
    if route.to is not None and whatsapp_address(route.to) != receiving:
        return False
    return route.keyword is None or route.keyword.strip().casefold() == first_word.casefold()


def chat_key(our_number: str, user: str) -> str:
    """One chat: our sender and the user. Its runs execute one at a time in arrival order, and
    its last inbound message opens WhatsApp's 24-hour window."""
    return f"whatsapp:{_bare(our_number)}:{_bare(user)}"


def _bare(address: str) -> str:
    return address.strip().removeprefix("whatsapp:")


def inbound_message(
    params: Mapping[str, str],
    routed: RoutedMessage,
    *,
    attachments: Sequence[Attachment],
    received_at: datetime,
    media_errors: Sequence[str] = (),
) -> InboundMessage:
    """The DESIGN §9 message for one WhatsApp post."""
    user = params.get("From", "")
    event: dict[str, Any] = dict(params)
    if media_errors:
        event["media_errors"] = list(media_errors)
    return InboundMessage(
        text=routed.text,
        channel="whatsapp",
        sender=Person(id=user, name=params.get("ProfileName") or None),
        conversation=Conversation(id=user),
        attachments=tuple(attachments),
        received_at=received_at,
        event=event,
    )


def media_items(params: Mapping[str, str]) -> list[tuple[str, str]]:
    """``(MediaUrlN, MediaContentTypeN)`` for N < ``NumMedia`` (missing URLs skipped)."""
    try:
        count = int(params.get("NumMedia") or 0)
    except ValueError:
        return []
    items: list[tuple[str, str]] = []
    for index in range(min(count, 10)):  # Twilio sends at most 10
        url = params.get(f"MediaUrl{index}")
        if url:
            content_type = params.get(f"MediaContentType{index}") or "application/octet-stream"
            items.append((url, content_type))
    return items
