"""What the ack path reads of a mail: its header block, and its MIME shape by a line scan.

An edge (SMTP ``DATA``, the webhooks) decides from these alone whether to take a mail (issue 12:
no MIME parse beyond the headers before the acknowledgement). The body is parsed in processing
(``process.py``), which applies the same limits again on the real parse.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.parser import BytesHeaderParser
from email.utils import getaddresses, parseaddr
from typing import Any

_MESSAGE_ID = re.compile(r"<[^<>\s]+>")
_HEAD_END = re.compile(rb"\r?\n\r?\n")
_DASHES = re.compile(rb"^--([^\r\n]*?)[ \t]*\r?$", re.MULTILINE)
_BOUNDARY = re.compile(rb'boundary\s*=\s*(?:"([^"\r\n]+)"|([^\s;"]+))', re.IGNORECASE)
_CONTENT_TYPE = re.compile(rb"^content-type:[ \t]*([^;\s]*)", re.IGNORECASE | re.MULTILINE)
_DISPOSITION = re.compile(rb"^content-disposition:[ \t]*([^;\s]*)", re.IGNORECASE | re.MULTILINE)
_FILENAME = re.compile(rb"\b(?:file)?name\*?\s*=", re.IGNORECASE)
_FOLD = re.compile(rb"\r?\n[ \t]+")


@dataclass(frozen=True, slots=True)
class MailHead:
    """A mail's top-level header block, decoded (``policy.default``), without its body."""

    message: EmailMessage
    message_id: str | None
    """With its angle brackets, as in ``In-Reply-To``/``References``; ``None`` when absent."""
    in_reply_to: tuple[str, ...]
    references: tuple[str, ...]
    from_address: str
    """The ``From`` address (lower case), or ``""`` when there is none."""
    to: tuple[str, ...]
    cc: tuple[str, ...]

    def header(self, name: str) -> str | None:
        return header_text(self.message, name)

    @property
    def thread_root(self) -> str | None:
        """The conversation as the headers name it: the first of ``References`` (the root,
        when the client kept it), else ``In-Reply-To``, else the mail itself."""
        return next(iter((*self.references, *self.in_reply_to)), None) or self.message_id

    def fields(self) -> list[tuple[str, str]]:
        """Every header as written, top down (for ``Authentication-Results``)."""
        return [(name, str(value)) for name, value in self.message.raw_items()]


def head_of(raw: bytes) -> bytes:
    """The header block of ``raw`` (up to the first empty line)."""
    end = _HEAD_END.search(raw)
    return raw if end is None else raw[: end.end()]


def read_head(raw: bytes) -> MailHead:
    message = BytesHeaderParser(policy=policy.default).parsebytes(head_of(raw))
    if not isinstance(message, EmailMessage):  # pragma: no cover - policy.default guarantees it
        raise TypeError("expected an EmailMessage")
    return MailHead(**head_values(message))


def head_values(message: EmailMessage) -> dict[str, Any]:
    """:class:`MailHead`'s fields read from ``message`` (also what a parsed mail starts with)."""
    return {
        "message": message,
        "message_id": _first_id(header_text(message, "Message-ID")),
        "in_reply_to": tuple(_MESSAGE_ID.findall(header_text(message, "In-Reply-To") or "")),
        "references": tuple(_MESSAGE_ID.findall(header_text(message, "References") or "")),
        "from_address": parseaddr(header_text(message, "From") or "")[1].strip().lower(),
        "to": _addresses(message, "To"),
        "cc": _addresses(message, "Cc"),
    }


@dataclass(frozen=True, slots=True)
class MimeShape:
    depth: int
    """How deep the parts nest (1: a single part), as far as the scan went."""
    attachments: int
    """Parts under the top multipart that are files (a filename, ``attachment``, not text)."""


def mime_shape(raw: bytes, *, max_depth: int) -> MimeShape:
    """The MIME structure from boundary lines and part headers, without decoding a part.

    A scan, not a parse: it stops once ``max_depth`` is passed, and counts as attachments the
    direct parts of the top multipart that carry a filename, ``Content-Disposition:
    attachment`` or a non-text type (what ``iter_attachments`` yields for ordinary mail).
    """
    head = head_of(raw)
    kind, boundary, _ = _part_of(head)
    if boundary is None or not kind.startswith(b"multipart/"):
        return MimeShape(depth=1, attachments=0)
    open_at: dict[bytes, int] = {boundary: 0}
    stack = [boundary]
    deepest, files, position = 1, 0, len(head)
    while (line := _DASHES.search(raw, position)) is not None:
        position = line.end()
        text = line.group(1)
        closing = text.endswith(b"--") and text[:-2] in open_at
        level = open_at.get(text[:-2] if closing else text)
        if level is None:
            continue
        for gone in stack[level + (0 if closing else 1) :]:
            open_at.pop(gone, None)
        del stack[level + (0 if closing else 1) :]
        if closing:
            continue
        end = _HEAD_END.search(raw, position)
        block = raw[position : end.end() if end is not None else len(raw)]
        if block.startswith((b"\r\n\r\n", b"\n\n")):
            block = b""  # the part has no headers: text/plain by default
        kind, child, named = _part_of(block)
        deepest = max(deepest, level + 2)
        if deepest > max_depth:
            break
        if level == 0 and (named or not kind.startswith((b"text/", b"multipart/"))):
            files += 1
        if child is not None and kind.startswith(b"multipart/") and child not in open_at:
            open_at[child] = len(stack)
            stack.append(child)
        position = end.end() if end is not None else len(raw)
    return MimeShape(depth=deepest, attachments=files)


def _part_of(block: bytes) -> tuple[bytes, bytes | None, bool]:
    """(content type, its boundary, whether the part is a named file) of one header block."""
    unfolded = _FOLD.sub(b" ", block)
    found = _CONTENT_TYPE.search(unfolded)
    kind = found.group(1).lower() if found else b"text/plain"
    boundary = None
    if found is not None and kind.startswith(b"multipart/"):
        line_end = unfolded.find(b"\n", found.start())
        matched = _BOUNDARY.search(unfolded[found.start() : line_end if line_end >= 0 else None])
        if matched is not None:
            boundary = matched.group(1) or matched.group(2)
    disposition = _DISPOSITION.search(unfolded)
    attachment = disposition is not None and disposition.group(1).lower() == b"attachment"
    named = attachment or (
        disposition is not None and _FILENAME.search(unfolded[disposition.start() :]) is not None
    )
    return kind, boundary, named


def content_id(mail_from: str | None, recipients: Sequence[str], raw: bytes) -> str:
    """A stand-in Message-ID for mail without one: the same mail retried gets the same id."""
    digest = hashlib.sha256()
    for part in (mail_from or "", *recipients):
        digest.update(part.encode() + b"\0")
    digest.update(raw)
    return f"<sha256.{digest.hexdigest()[:40]}@switchboard.invalid>"


def header_text(message: EmailMessage, name: str) -> str | None:
    """A header's decoded value, or ``None``; a header too broken to parse gives its raw text."""
    try:
        value = message.get(name)
    except Exception:  # a defective header: fall back to the undecoded text
        raw = [v for k, v in message.raw_items() if k.lower() == name.lower()]
        return str(raw[0]) if raw else None
    return None if value is None else as_text(value)


def as_text(value: Any) -> str:
    return str(value).replace("\r", " ").replace("\n", " ").strip()


def _first_id(value: str | None) -> str | None:
    if not value:
        return None
    found = _MESSAGE_ID.search(value)
    return found.group(0) if found else None


def _addresses(message: EmailMessage, name: str) -> tuple[str, ...]:
    values = [header_text(message, name) or ""]
    return tuple(address.lower() for _, address in getaddresses(values) if "@" in address)
