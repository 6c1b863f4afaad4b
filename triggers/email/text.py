"""The readable text of a mail: HTML turned into text, quoted history and signature cut off.

The stdlib has no reply parser (PROTOCOLS §3.6), so these are the common heuristics: cut at an
attribution line (``On … wrote:``), an Outlook ``-----Original Message-----`` or ``From:``/``Sent:``
block, drop ``>`` quoted lines, and cut at the signature delimiter ``-- `` (RFC 3676 §4.3).
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

_ATTRIBUTION = re.compile(
    r"^\s*(On\s.+wrote:|Le\s.+a écrit\s?:|Am\s.+schrieb\s.*:|El\s.+escribió:)\s*$", re.IGNORECASE
)
_ORIGINAL_MESSAGE = re.compile(
    r"^\s*-{2,}\s*(Original Message|Forwarded message|Ursprüngliche Nachricht)\s*-{2,}\s*$",
    re.IGNORECASE,
)
_HEADER_BLOCK_START = re.compile(r"^\s*\**(From|De|Von):\**\s", re.IGNORECASE)
_HEADER_BLOCK_NEXT = re.compile(
    r"^\s*\**(Sent|Date|Envoyé|Gesendet|To|Subject):\**\s", re.IGNORECASE
)
_SIGNATURE = re.compile(r"^(-- ?|Sent from my \w+.*|Get Outlook for \w+.*)$")


def strip_quoted(text: str) -> str:
    """The new part of a reply: quoted history and signature removed (the whole text if that
    would leave nothing)."""
    lines = text.replace("\r\n", "\n").split("\n")
    kept: list[str] = []
    for index, line in enumerate(lines):
        # Clients wrap long attribution lines: "On …, Name <\nname@x> wrote:".
        wrapped = (" ".join(lines[index : index + n]) for n in (1, 2, 3))
        if any(_ATTRIBUTION.match(candidate) for candidate in wrapped):
            break
        if _ORIGINAL_MESSAGE.match(line) or _SIGNATURE.match(line.rstrip("\n")):
            break
        if _HEADER_BLOCK_START.match(line) and any(
            _HEADER_BLOCK_NEXT.match(after) for after in lines[index + 1 : index + 4]
        ):
            break
        if line.lstrip().startswith(">"):
            continue
        kept.append(line)
    stripped = "\n".join(kept).strip()
    return stripped or text.strip()


_BLOCK_TAGS = frozenset(
    {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "table"}
    | {"blockquote", "pre", "hr", "section", "article", "header", "footer"}
)
_SKIPPED_TAGS = frozenset({"script", "style", "head", "title"})


class _TextOfHtml(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping = 0
        self._quoting = 0
        self._quote_tags: list[bool] = []
        self._href: list[str | None] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag in _SKIPPED_TAGS:
            self._skipping += 1
        if tag in _BLOCK_TAGS:
            self.parts.append("\n")
        if tag == "li":
            self.parts.append("- ")
        if tag == "a":
            self._href.append(attributes.get("href"))
        # Gmail wraps history in <div class="gmail_quote">, most clients in <blockquote>.
        quote = tag == "blockquote" or "gmail_quote" in (attributes.get("class") or "")
        if tag in {"blockquote", "div"}:
            self._quote_tags.append(quote)
            self._quoting += quote

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIPPED_TAGS and self._skipping:
            self._skipping -= 1
        if tag == "a" and self._href:
            href = self._href.pop()
            if href and href.startswith(("http://", "https://")):
                self.parts.append(f" ({href})")
        if tag in {"blockquote", "div"} and self._quote_tags:
            self._quoting -= self._quote_tags.pop()
        if tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if self._skipping:
            return
        data = re.sub(r"\s+", " ", data)
        if self._quoting and data.strip():
            data = "\n> " + data.strip() + "\n"
        self.parts.append(data)


def html_to_text(html: str) -> str:
    """Plain text of an HTML body: blocks become lines, links keep their URL, quotes get ``>``."""
    parser = _TextOfHtml()
    parser.feed(html)
    parser.close()
    lines = [line.strip() for line in "".join(parser.parts).split("\n")]
    text = "\n".join(lines)
    return re.sub(r"\n{3,}", "\n\n", text).strip()
