"""Markdown (what workflows write) → Slack mrkdwn (what ``chat.postMessage`` ``text`` renders).

mrkdwn is not Markdown (PROTOCOLS §1.6): ``*bold*``, ``_italic_``, ``~strike~``, links
``<url|label>``, no headings, and ``&``, ``<``, ``>`` escaped as entities everywhere (also in
code: Slack would read ``<…>`` as a link or mention). The Markdown is parsed with markdown-it-py
(CommonMark + strikethrough) and rendered from its token stream.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from markdown_it import MarkdownIt
from markdown_it.token import Token

from core.chunking import split_text

_PARSER = MarkdownIt("commonmark", {"html": False}).enable("strikethrough")
LINK = re.compile(r"<[^<>]*>")
"""Links and mentions (``<url|label>``, ``<@U123>``): text escapes every other ``<`` and ``>``."""
_INLINE_MARKS = {"strong": "*", "em": "_", "s": "~"}


def escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def split_mrkdwn(mrkdwn: str, limit: int) -> list[str]:
    """Rendered mrkdwn as messages of at most ``limit`` characters, never cut inside a link
    (half a ``<url|label>`` shows as raw text in both messages)."""
    return split_text(mrkdwn, limit, keep_whole=LINK)


def render_mrkdwn(markdown: str) -> str:
    """``markdown`` as Slack mrkdwn: bold, italics, strike, links, code, lists, quotes."""
    return _Renderer().blocks(_PARSER.parse(markdown)).strip()


class _Renderer:
    def __init__(self) -> None:
        # One entry per open list: its next number (ordered) or None (bullets).
        self._lists: list[int | None] = []

    def blocks(self, tokens: Sequence[Token]) -> str:
        out: list[str] = []
        index = 0
        while index < len(tokens):
            token = tokens[index]
            kind = token.type
            if kind in {"fence", "code_block"}:
                code = token.content if token.content.endswith("\n") else token.content + "\n"
                out.append(f"```\n{escape(code)}```\n\n")
            elif kind == "inline":
                out.append(self.inline(token.children or []))
            elif kind == "paragraph_close":
                out.append("\n" if self._lists else "\n\n")
            elif kind == "heading_open":
                end = _closing(tokens, index)
                title = self.blocks(tokens[index + 1 : end]).strip()
                out.append(f"*{title}*\n\n" if title else "")
                index = end
            elif kind in {"bullet_list_open", "ordered_list_open"}:
                start = token.attrGet("start")
                self._lists.append(
                    int(start)
                    if kind == "ordered_list_open" and start
                    else (1 if kind == "ordered_list_open" else None)
                )
            elif kind in {"bullet_list_close", "ordered_list_close"}:
                self._lists.pop()
                if not self._lists:
                    out.append("\n")
            elif kind == "list_item_open":
                end = _closing(tokens, index)
                out.append(self._list_item(tokens[index + 1 : end]))
                index = end
            elif kind == "blockquote_open":
                end = _closing(tokens, index)
                inner = _Renderer().blocks(tokens[index + 1 : end]).strip()
                out.append("\n".join(f"> {line}" if line else ">" for line in inner.split("\n")))
                out.append("\n\n")
                index = end
            elif kind == "hr":
                out.append("──────────\n\n")
            elif kind == "html_block":
                out.append(escape(token.content) + "\n")
            index += 1
        return "".join(out)

    def _list_item(self, tokens: Sequence[Token]) -> str:
        depth = len(self._lists) - 1
        number = self._lists[-1]
        if number is None:
            marker = "•"
        else:
            marker = f"{number}."
            self._lists[-1] = number + 1
        body = self.blocks(tokens).strip("\n")
        indent = "    " * depth
        lines = body.split("\n")
        first = f"{indent}{marker} {lines[0]}"
        rest = [
            line if line.startswith(indent + "    ") else f"{indent}   {line}" for line in lines[1:]
        ]
        return "\n".join([first, *rest]) + "\n"

    def inline(self, children: Sequence[Token]) -> str:
        out: list[str] = []
        link_stack: list[tuple[str, int]] = []  # (href, position in out where the label starts)
        for child in children:
            kind = child.type
            if kind == "text":
                out.append(escape(child.content))
            elif kind == "code_inline":
                out.append(f"`{escape(child.content)}`")
            elif kind in {"softbreak", "hardbreak"}:
                out.append("\n")
            elif kind.endswith(("_open", "_close")) and kind.rsplit("_", 1)[0] in _INLINE_MARKS:
                out.append(_INLINE_MARKS[kind.rsplit("_", 1)[0]])
            elif kind == "link_open":
                link_stack.append((str(child.attrGet("href") or ""), len(out)))
            elif kind == "link_close" and link_stack:
                href, start = link_stack.pop()
                label = "".join(out[start:])
                del out[start:]
                out.append(_link(href, label))
            elif kind == "image":
                out.append(_link(str(child.attrGet("src") or ""), escape(child.content)))
            elif kind == "html_inline":
                out.append(escape(child.content))
        return "".join(out)


def _link(href: str, label: str) -> str:
    # Inside <…> the URL keeps its own characters but "|" and ">" would end it early.
    url = href.replace("&", "&amp;").replace("<", "%3C").replace(">", "%3E").replace("|", "%7C")
    if not label or label == escape(href):
        return f"<{url}>"
    return f"<{url}|{label.replace('|', '¦')}>"


def _closing(tokens: Sequence[Token], index: int) -> int:
    """Index of the token that closes the block opened at ``index``."""
    depth = 0
    for position in range(index, len(tokens)):
        depth += tokens[position].nesting
        if depth == 0:
            return position
    return len(tokens) - 1
