"""``deliver_to``: where a schedule's output goes, as the reply target the outbox understands.

The forms (agreed with the channel senders): none (the result is kept, nothing is sent),
``slack:<channel id>`` (the single-workspace bot token), ``slack:<team id>/<channel id>`` (the
bot token of that workspace's OAuth installation: the Slack sender looks the token up by the
target's ``details.team_id``, as for a reply to a message from that workspace),
``whatsapp:<+number>``, ``email:<address>``, ``webhook:<url>`` (a public http(s) URL, or one
``[delivery] allow_hosts`` allows: ``core/addresses.py``).
"""

from __future__ import annotations

import re

from core.addresses import DestinationPolicy, RefusedDestination
from core.models import ReplyTarget
from scheduler.cron import InvalidSchedule

_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_SLACK_CHANNEL = re.compile(r"^(?:(?P<team>T[A-Z0-9]{1,40})/)?(?P<channel>[A-Z0-9]{2,40})$")


def parse_deliver_to(value: str | None, policy: DestinationPolicy | None = None) -> ReplyTarget:
    """The reply target for ``value``; :class:`InvalidSchedule` says what form it should take.
    With ``policy`` (a target being stored), a webhook URL must be one it allows."""
    text = (value or "").strip()
    if text in ("", "none"):
        return ReplyTarget(channel="none")
    kind, separator, address = text.partition(":")
    address = address.strip()
    if not separator or not address:
        raise _invalid(value)
    slack = _SLACK_CHANNEL.match(address) if kind == "slack" else None
    if slack is not None:
        team = slack["team"]
        return ReplyTarget(
            channel="slack", address=slack["channel"], details={"team_id": team} if team else {}
        )
    if kind == "whatsapp":
        number = address.removeprefix("whatsapp:")
        if _E164.match(number):
            return ReplyTarget(channel="whatsapp", address=f"whatsapp:{number}")
    if kind == "email" and _EMAIL.match(address):
        return ReplyTarget(channel="email", address=address)
    if kind == "webhook" and address.startswith(("http://", "https://")):
        if policy is not None:
            try:
                policy.check_url(address)
            except RefusedDestination as exc:
                raise InvalidSchedule(f"deliver_to: {exc.detail}") from exc
        return ReplyTarget(channel="webhook", address=address)
    raise _invalid(value)


def _invalid(value: str | None) -> InvalidSchedule:
    return InvalidSchedule(
        f"deliver_to: {value!r} is not a target; use none, slack:<channel id>, "
        "slack:<team id>/<channel id>, whatsapp:<+number>, email:<address> or "
        "webhook:<http(s) url>"
    )
