"""An outgoing mail from a reply (PROTOCOLS §3.7, §3.10): threading headers, text + HTML.

A reply to a mail has ``Re: `` once, ``In-Reply-To`` (the parent) and ``References`` (the
parent's References + the parent), and ``Auto-Submitted: auto-replied`` (RFC 3834 §5); a mail
that answers nothing (``send_email``, a schedule's result) is ``auto-generated``. The Markdown
text is sent as it is (it reads well as plain text) and rendered to HTML with markdown-it-py with
raw HTML disabled, so a workflow's text cannot inject markup.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any

from markdown_it import MarkdownIt

_MARKDOWN = MarkdownIt("commonmark", {"html": False, "linkify": False}).enable("table")
_REPLY_PREFIX = re.compile(r"^\s*(re|aw|sv|antw)\s*:\s*", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class OutgoingFile:
    filename: str
    content_type: str
    data: bytes


def reply_subject(subject: str) -> str:
    """``Re: `` exactly once."""
    subject = subject.strip()
    return subject if _REPLY_PREFIX.match(subject) else f"Re: {subject}".rstrip()


def render_html(markdown: str) -> str:
    body = _MARKDOWN.render(markdown)
    return (
        '<!DOCTYPE html>\n<html><body><div style="font-family: sans-serif">'
        f"{body}</div></body></html>\n"
    )


def compose_mail(
    *,
    sender: str,
    target: dict[str, Any],
    text: str,
    message_id: str,
    now: datetime,
    default_subject: str,
    files: Sequence[OutgoingFile] = (),
) -> EmailMessage:
    """The mail for one delivery. ``target`` is a ``ReplyTarget`` dump: ``address`` (To) and
    ``details`` (``subject``, ``in_reply_to``, ``references``, ``to``, ``cc``, ``bcc``,
    ``reply_to``)."""
    details: dict[str, Any] = target.get("details") or {}
    in_reply_to = details.get("in_reply_to")
    message = EmailMessage()
    message["From"] = sender
    message["To"] = ", ".join(details.get("to") or [str(target.get("address") or "")])
    if details.get("cc"):
        message["Cc"] = ", ".join(details["cc"])
    if details.get("bcc"):
        message["Bcc"] = ", ".join(details["bcc"])
    if details.get("reply_to"):
        message["Reply-To"] = str(details["reply_to"])
    subject = str(details.get("subject") or "")
    if in_reply_to:
        message["Subject"] = reply_subject(subject)
        message["In-Reply-To"] = str(in_reply_to)
        references = [str(r) for r in details.get("references") or [in_reply_to]]
        message["References"] = " ".join(dict.fromkeys(references))
        message["Auto-Submitted"] = "auto-replied"
    else:
        message["Subject"] = subject or default_subject
        message["Auto-Submitted"] = "auto-generated"
    message["Message-ID"] = message_id
    message["Date"] = format_datetime(now)
    # Exchange: do not answer this with out-of-office or other automatic replies.
    message["X-Auto-Response-Suppress"] = "All"
    message.set_content(text or " ")
    message.add_alternative(render_html(text), subtype="html")
    for file in files:
        maintype, _, subtype = file.content_type.partition("/")
        message.add_attachment(
            file.data,
            maintype=maintype or "application",
            subtype=subtype or "octet-stream",
            filename=file.filename,
        )
    return message
