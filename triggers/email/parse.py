"""Raw RFC 5322 bytes → :class:`ParsedEmail` with the stdlib ``email`` package (PROTOCOLS §3.6).

``policy.default`` gives decoded headers and ``get_body``; every header access is guarded because
mail from the internet is often malformed, and a malformed header must not lose the message.
"""

from __future__ import annotations

import mimetypes
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import parseaddr
from typing import Any

from triggers.email.headers import MailHead, as_text, head_values, header_text
from triggers.email.text import html_to_text, strip_quoted

MAX_MIME_DEPTH = 50
"""Deepest multipart nesting we read. Real mail nests a few levels (a forward of a forward);
3,000 levels exhaust the stdlib parser's recursion, and such a mail can never be read."""


class UnreadableMail(ValueError):
    """A message no retry can make readable (the intake answers it with a 5xx)."""


@dataclass(frozen=True, slots=True)
class ParsedAttachment:
    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True, slots=True)
class ParsedEmail(MailHead):
    """The whole mail: its head (what the edge read) and its decoded body."""

    subject: str
    from_name: str | None
    reply_to: str | None
    text: str
    """The new part of the message (quoted history and signature removed)."""
    full_text: str
    html: str | None
    attachments: tuple[ParsedAttachment, ...]

    def headers(self) -> list[list[str]]:
        """Every header, decoded, in order (``[name, value]`` pairs)."""
        pairs = [
            [name, as_text(value)]
            for name in self.message
            for value in self.message.get_all(name) or []
        ]
        return _unique(pairs)

    def thread_ids(self) -> list[str]:
        """Message-IDs this mail answers, most specific first: In-Reply-To, then References
        from the newest back to the thread root."""
        ids = [*self.in_reply_to, *reversed(self.references)]
        return list(dict.fromkeys(ids))


def parse_email(raw: bytes) -> ParsedEmail:
    """Raises :class:`UnreadableMail` for MIME nested deeper than :data:`MAX_MIME_DEPTH`."""
    try:
        message = BytesParser(policy=policy.default).parsebytes(raw)
    except RecursionError as exc:
        raise _too_deep() from exc
    if not isinstance(message, EmailMessage):  # pragma: no cover - policy.default guarantees it
        raise TypeError("expected an EmailMessage")
    if mime_depth(message) > MAX_MIME_DEPTH:
        raise _too_deep()
    return parsed_from_message(message)


def mime_depth(message: EmailMessage) -> int:
    """How deep the parts nest (1: a single part), walked without recursion."""
    deepest = 0
    pending: list[tuple[Any, int]] = [(message, 1)]
    while pending:
        part, depth = pending.pop()
        deepest = max(deepest, depth)
        if depth > MAX_MIME_DEPTH:
            break
        payload = part.get_payload() if part.is_multipart() else None
        if isinstance(payload, list):
            pending.extend((child, depth + 1) for child in payload)
    return deepest


def _too_deep() -> UnreadableMail:
    return UnreadableMail(f"MIME parts nested deeper than {MAX_MIME_DEPTH} levels")


def parsed_from_message(message: EmailMessage) -> ParsedEmail:
    from_name = parseaddr(header_text(message, "From") or "")[0]
    reply_to = parseaddr(header_text(message, "Reply-To") or "")[1] or None
    full_text, html = _body_text(message)
    return ParsedEmail(
        **head_values(message),
        subject=" ".join((header_text(message, "Subject") or "").split()),
        from_name=from_name.strip() or None,
        reply_to=reply_to.strip().lower() if reply_to else None,
        text=strip_quoted(full_text),
        full_text=full_text,
        html=html,
        attachments=tuple(_attachments(message)),
    )


def _body_text(message: EmailMessage) -> tuple[str, str | None]:
    """The text body (HTML converted when there is no text part) and the HTML, if any."""
    html_part = message.get_body(preferencelist=("html",))
    html = _content(html_part) if isinstance(html_part, EmailMessage) else None
    plain = message.get_body(preferencelist=("plain",))
    if isinstance(plain, EmailMessage):
        return _content(plain).strip(), html
    if html is not None:
        return html_to_text(html), html
    return "", None


def _content(part: EmailMessage) -> str:
    try:
        content = part.get_content()
    except (LookupError, UnicodeError, ValueError):  # unknown or lying charset
        payload = part.get_payload(decode=True)
        return payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""
    if isinstance(content, bytes):
        return content.decode("utf-8", "replace")
    return str(content)


def _attachments(message: EmailMessage) -> list[ParsedAttachment]:
    found: list[ParsedAttachment] = []
    for index, part in enumerate(message.iter_attachments(), start=1):
        content_type = part.get_content_type()
        if content_type == "message/rfc822":
            inner = part.get_payload()
            first = inner[0] if isinstance(inner, list) and inner else None
            data = first.as_bytes() if isinstance(first, EmailMessage) else b""
        else:
            payload = part.get_payload(decode=True)
            data = payload if isinstance(payload, bytes) else b""
        filename = part.get_filename() or (
            f"attachment-{index}{mimetypes.guess_extension(content_type) or '.bin'}"
        )
        found.append(ParsedAttachment(filename=filename, content_type=content_type, data=data))
    return found


def _unique(pairs: list[list[str]]) -> list[list[str]]:
    # get_all returns every value for a name; iterating the message repeats the name per value.
    seen: set[tuple[str, str]] = set()
    unique: list[list[str]] = []
    for name, value in pairs:
        if (name.lower(), value) not in seen:
            seen.add((name.lower(), value))
            unique.append([name, value])
    return unique
