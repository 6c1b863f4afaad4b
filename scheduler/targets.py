"""``deliver_to``: where a schedule's output goes, as the reply target the outbox understands.

The forms (agreed with the channel senders): none (the result is kept, nothing is sent),
``slack:<channel id>``, ``whatsapp:<+number>``, ``email:<address>``, ``webhook:<url>``.
"""

from __future__ import annotations

import re

from core.models import ReplyTarget
from scheduler.cron import InvalidSchedule

_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_SLACK_CHANNEL = re.compile(r"^[A-Z0-9]{2,40}$")


def parse_deliver_to(value: str | None) -> ReplyTarget:
    """The reply target for ``value``; :class:`InvalidSchedule` says what form it should take."""
    text = (value or "").strip()
    if text in ("", "none"):
        return ReplyTarget(channel="none")
    kind, separator, address = text.partition(":")
    address = address.strip()
    if not separator or not address:
        raise _invalid(value)
    if kind == "slack" and _SLACK_CHANNEL.match(address):
        return ReplyTarget(channel="slack", address=address)
    if kind == "whatsapp":
        number = address.removeprefix("whatsapp:")
        if _E164.match(number):
            return ReplyTarget(channel="whatsapp", address=f"whatsapp:{number}")
    if kind == "email" and _EMAIL.match(address):
        return ReplyTarget(channel="email", address=address)
    if kind == "webhook" and address.startswith(("http://", "https://")):
        return ReplyTarget(channel="webhook", address=address)
    raise _invalid(value)


def _invalid(value: str | None) -> InvalidSchedule:
    return InvalidSchedule(
        f"deliver_to: {value!r} is not a target; use none, slack:<channel id>, "
        "whatsapp:<+number>, email:<address> or webhook:<http(s) url>"
    )
