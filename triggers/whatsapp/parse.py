"""A Twilio WhatsApp webhook's parameters → the workflow to run and the message it gets.

Pure functions: no I/O. The parameters are the decoded form fields of the signed POST
(PROTOCOLS §2.1); every one of them is kept in ``event`` (Twilio adds fields without notice:
location ``Latitude``/``Longitude``/``Address``/``Label``, ``ButtonText``/``ButtonPayload``,
``OriginalRepliedMessageSid``, ``Referral*``…).
"""

from __future__ import annotations

import string
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl

from core.messages import Attachment, Conversation, InboundMessage, Person
from triggers.whatsapp.settings import WhatsAppSettings, whatsapp_address


def form_pairs(raw: bytes) -> list[tuple[str, str]]:
    """A webhook's URL-encoded UTF-8 form, in order (``ValueError`` on anything else)."""
    return parse_qsl(raw.decode("utf-8"), keep_blank_values=True, errors="strict")


@dataclass(frozen=True, slots=True)
class RoutedMessage:
    """Where a message goes: the workflow, the text it sees (keyword removed), fixed inputs."""

    workflow: str
    text: str
    inputs: dict[str, Any] = field(default_factory=dict)


def route_message(settings: WhatsAppSettings, to: str, body: str) -> RoutedMessage | None:
    """The first ``[[whatsapp.routes]]`` entry that matches, else ``[whatsapp] workflow``.

    A route matches when its ``to`` (if any) is the receiving number and its ``keyword`` (if any)
    starts the message, compared case-insensitively, followed by the end of the message,
    whitespace or punctuation (``Report: weekly``, ``report, please``, ``REPORT``); the keyword
    and the punctuation right after it are removed from the text.
    """
    receiving = whatsapp_address(to) if to else ""
    text = body.strip()
    for route in settings.routes:
        if route.to is not None and whatsapp_address(route.to) != receiving:
            continue
        if route.keyword is None:
            return RoutedMessage(route.workflow, text, dict(route.inputs))
        rest = _after_keyword(text, route.keyword.strip())
        if rest is not None:
            return RoutedMessage(route.workflow, rest, dict(route.inputs))
    if settings.workflow is not None:
        return RoutedMessage(settings.workflow, text)
    return None


def _after_keyword(text: str, keyword: str) -> str | None:
    """``text`` without its leading ``keyword``, or ``None`` when it does not start with it."""
    head = text[: len(keyword)]
    if not keyword or head.casefold() != keyword.casefold():
        return None
    rest = text[len(keyword) :]
    if rest and not (rest[0].isspace() or _is_punctuation(rest[0])):
        return None  # "reporting" does not start with the keyword "report"
    start = 0
    while start < len(rest) and _is_punctuation(rest[start]):
        start += 1  # "Report: weekly", "help!!"; "report -5" keeps its "-"
    return rest[start:].strip()


def _is_punctuation(char: str) -> bool:
    return char in string.punctuation or unicodedata.category(char).startswith("P")


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
