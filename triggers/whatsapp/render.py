"""Markdown → WhatsApp formatting (``*bold*``, ``_italic_``, ``~strike~``, ```` ``` ```` blocks).

WhatsApp renders a small markup of its own and shows everything else literally, so the answer's
Markdown is parsed (markdown-it-py, CommonMark + strikethrough) and written out again: headings
become bold lines, links ``text (url)``, lists ``•``/``1.`` lines, quotes ``> `` lines, inline
code single backticks (WhatsApp's inline code) and code blocks triple-backtick fences on their
own lines (which is also what ``core.chunking.split_text`` keeps intact across parts).
"""

from __future__ import annotations

from markdown_it import MarkdownIt
from markdown_it.tree import SyntaxTreeNode

_PARSER = MarkdownIt("commonmark").enable("strikethrough")
_INLINE_MARKS = {"strong": "*", "em": "_", "s": "~"}


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
