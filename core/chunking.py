"""Splitting a long answer into messages a channel accepts (Slack ~4,000, WhatsApp 1,600 chars).

Cuts fall on the widest boundary that fits: paragraph, then line, then sentence, then word, and
only as a last resort inside a word. A cut inside a fenced code block closes the fence at the end
of one part and reopens it (same info string) at the start of the next, so every part renders.
"""

from __future__ import annotations

import re

FENCE = "```"
_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+")
_BOUNDARIES: tuple[re.Pattern[str], ...] = (
    re.compile(r"\n\s*\n"),  # paragraph
    re.compile(r"\n"),  # line
    _SENTENCE_END,  # sentence
    re.compile(r"\s+"),  # word
)


def split_text(text: str, limit: int, *, keep_whole: re.Pattern[str] | None = None) -> list[str]:
    """``text`` as parts of at most ``limit`` characters each (no empty parts).

    ``keep_whole`` matches spans no cut may fall inside (a channel's link syntax, e.g. Slack's
    ``<url|label>``): the part ends before such a span instead, unless the span alone is longer
    than a part."""
    if limit < 2 * len(FENCE) + 16:
        raise ValueError(f"limit {limit} is too small to split text into parts")
    text = text.strip()
    parts: list[str] = []
    reopen = ""  # the fence line to start the next part with, when a cut fell inside a block
    while text:
        room = limit - len(reopen)
        if len(text) <= room:
            parts.append(reopen + text)
            break
        cut, rest_start = _cut(text, room - len(FENCE) - 1, keep_whole)
        head = text[:cut].rstrip()
        fence = _open_fence(reopen + head)
        if fence is not None:
            head += "\n" + FENCE
        parts.append(reopen + head)
        text = text[rest_start:].lstrip("\n" if fence is not None else None)
        reopen = fence + "\n" if fence is not None else ""
    return [part for part in parts if part.strip()]


def _cut(text: str, room: int, keep_whole: re.Pattern[str] | None) -> tuple[int, int]:
    """Where the part ends and where the rest starts, at the widest boundary within ``room``
    that is not inside a ``keep_whole`` span."""
    window = text[: room + 1]
    spans = _spans(text, room, keep_whole)

    def allowed(position: int) -> bool:
        return not any(start < position < end for start, end in spans)

    for boundary in _BOUNDARIES:
        matches = [
            match
            for match in boundary.finditer(window)
            if match.start() > room // 3 and allowed(match.start())
        ]
        if matches:
            last = matches[-1]
            return last.start(), last.end()
    for start, end in spans:
        if 0 < start < room < end:
            return start, start  # no boundary before the span: end the part where it starts
    return room, room


def _spans(text: str, room: int, keep_whole: re.Pattern[str] | None) -> list[tuple[int, int]]:
    """The ``keep_whole`` spans that start within ``room`` characters."""
    if keep_whole is None:
        return []
    spans: list[tuple[int, int]] = []
    for match in keep_whole.finditer(text):
        if match.start() > room:
            break
        spans.append(match.span())
    return spans


def _open_fence(part: str) -> str | None:
    """The opening fence line (with its info string) when ``part`` ends inside a code block."""
    opening: str | None = None
    for line in part.split("\n"):
        stripped = line.strip()
        if stripped.startswith(FENCE):
            opening = None if opening is not None else stripped
    return opening
