"""A reply as the WhatsApp messages that carry it, and Markdown → WhatsApp formatting.

``Body`` is at most 1,600 characters (PROTOCOLS §2.4): longer text is split on paragraph,
sentence, then word boundaries and numbered ``(1/3)``; attachments follow, one media URL per
message (WhatsApp sends only the first of several). Outside the 24-hour window only an approved
template may be sent: one message with ``ContentSid`` and ``ContentVariables``, no body, no media.

WhatsApp renders a small markup of its own and shows everything else literally, so the answer's
Markdown is parsed (markdown-it-py, CommonMark + strikethrough) and written out again: headings
become bold lines, links ``text (url)``, lists ``•``/``1.`` lines, quotes ``> `` lines, inline
code single backticks (WhatsApp's inline code) and code blocks triple-backtick fences on their
own lines (which is also what ``core.chunking.split_text`` keeps intact across parts).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from markdown_it import MarkdownIt
from markdown_it.tree import SyntaxTreeNode

from core.chunking import split_text
from core.replies import Reply

BODY_LIMIT = 1600
_NUMBERING_ROOM = len(" (999/999)")

_PARSER = MarkdownIt("commonmark").enable("strikethrough")
_INLINE_MARKS = {"strong": "*", "em": "_", "s": "~"}


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


def render_for_whatsapp(markdown: str) -> str:
    """``markdown`` as WhatsApp-formatted text."""
    tree = SyntaxTreeNode(_PARSER.parse(markdown))
    return _blocks(tree.children).strip()


def _blocks(nodes: list[SyntaxTreeNode], separator: str = "\n\n") -> str:
    return separator.join(text for text in (_block(node) for node in nodes) if text)


def _block(node: SyntaxTreeNode) -> str:
    kind = node.type
    if kind == "paragraph":
        return _inline_of(node)
    if kind == "heading":
        title = _inline_of(node)
        return f"*{title}*" if title else ""
    if kind in ("fence", "code_block"):
        return "```\n" + node.content.rstrip("\n") + "\n```"
    if kind in ("bullet_list", "ordered_list"):
        return _list(node)
    if kind == "blockquote":
        return "\n".join(
            f"> {line}" if line else ">" for line in _blocks(node.children).split("\n")
        )
    if kind == "hr":
        return "———"
    if kind == "html_block":
        return node.content.strip()
    return _blocks(node.children) if node.children else node.content.strip()


def _list(node: SyntaxTreeNode) -> str:
    lines: list[str] = []
    for item in node.children:
        marker = f"{item.info}." if node.type == "ordered_list" else "•"
        body = _blocks(item.children, "\n")
        first, *rest = body.split("\n") if body else [""]
        lines.append(f"{marker} {first}")
        lines.extend(f"   {line}" if line else "" for line in rest)
    return "\n".join(lines)


def _inline_of(node: SyntaxTreeNode) -> str:
    return "".join(_inline(child) for child in node.children).strip()


def _inline(node: SyntaxTreeNode) -> str:
    kind = node.type
    if kind == "inline":
        return "".join(_inline(child) for child in node.children)
    if kind in ("text", "html_inline"):
        return node.content
    if kind in ("softbreak", "hardbreak"):
        return "\n"
    if kind == "code_inline":
        return f"`{node.content}`"
    if kind in _INLINE_MARKS:
        inner = "".join(_inline(child) for child in node.children)
        mark = _INLINE_MARKS[kind]
        return f"{mark}{inner}{mark}" if inner.strip() else inner
    if kind == "link":
        label = "".join(_inline(child) for child in node.children)
        href = str(node.attrs.get("href", ""))
        return label if not href or label == href else f"{label} ({href})"
    if kind == "image":
        alt = "".join(_inline(child) for child in node.children)
        src = str(node.attrs.get("src", ""))
        return f"{alt} ({src})" if alt else src
    return "".join(_inline(child) for child in node.children) or node.content
