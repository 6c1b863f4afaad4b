"""A reply as the WhatsApp messages that carry it, in order (PROTOCOLS §2.4).

``Body`` is at most 1,600 characters: longer text is split on paragraph, sentence, then word
boundaries and numbered ``(1/3)``; attachments follow, one media URL per message (WhatsApp sends
only the first of several). Outside the 24-hour window only an approved template may be sent:
one message with ``ContentSid`` and ``ContentVariables``, no body and no media.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from core.chunking import split_text
from core.replies import Reply
from triggers.whatsapp.render import render_for_whatsapp

BODY_LIMIT = 1600
_NUMBERING_ROOM = len(" (999/999)")


@dataclass(frozen=True, slots=True)
class OutboundMessage:
    """The fields of one ``messages.create`` call besides ``from_`` and ``to``."""

    body: str | None = None
    media_url: str | None = None
    content_sid: str | None = None
    content_variables: str | None = None


def numbered_parts(text: str, limit: int = BODY_LIMIT) -> list[str]:
    """``text`` in parts of at most ``limit`` characters, numbered when there is more than one."""
    text = text.strip()
    if len(text) <= limit:
        return [text] if text else []
    parts = split_text(text, limit - _NUMBERING_ROOM)
    return [f"{part} ({number}/{len(parts)})" for number, part in enumerate(parts, 1)]


def session_messages(reply: Reply) -> list[OutboundMessage]:
    """A free-form reply (inside the window): the text's parts, then one message per file."""
    messages = [
        OutboundMessage(body=part) for part in numbered_parts(render_for_whatsapp(reply.text))
    ]
    messages.extend(OutboundMessage(media_url=url) for url in reply.attachments)
    return messages


def template_message(
    reply: Reply, content_sid: str, variables: Mapping[str, str], *, run_id: str, workflow: str
) -> OutboundMessage:
    """The approved template that stands in for ``reply`` outside the window.

    Each variable's ``{text}``, ``{run_id}`` and ``{workflow}`` are filled in (a variable holds at
    most 1,600 characters: error 21658), by replacement so that braces in the answer are kept.
    """
    text = render_for_whatsapp(reply.text)
    filled: dict[str, str] = {}
    for name, pattern in variables.items():
        value = (
            pattern.replace("{run_id}", run_id)
            .replace("{workflow}", workflow)
            .replace("{text}", text)
        )
        filled[name] = value if len(value) <= BODY_LIMIT else value[: BODY_LIMIT - 1] + "…"
    return OutboundMessage(
        content_sid=content_sid, content_variables=json.dumps(filled, ensure_ascii=False)
    )
