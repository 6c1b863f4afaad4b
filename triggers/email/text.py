"""The readable text of a mail: HTML turned into text, quoted history and signature cut off.

The stdlib has no reply parser (PROTOCOLS §3.6), and the maintained libraries cut at the first
quote header, which loses a reply written below the quote; so these are the common heuristics,
measured on a public corpus by ``bench/reply_corpus.py``. History is introduced by a *quote
header*: an attribution line (``On … wrote:``), an Outlook ``-----Original Message-----`` or
``From:``/``Sent:`` block, or a separator rule (``____``, ``-----``) above one of those. A header
followed by ``>`` lines introduces only that quote, and text after it is the reply
(bottom-posting, interleaved answers); a header followed by unquoted text starts the old message,
and the rest is cut. Signatures are cut at ``-- `` (RFC 3676 §4.3), "Sent from my …" and a
trailing ``-Name`` sign-off.
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
    r"^\s*\**(Sent|Date|Envoyé|Gesendet|To|Cc|Subject|Objet|Betreff):\**\s", re.IGNORECASE
)
# Outlook's rule above its header block is 32 underscores (a dashed row in older versions and
# in plain-text conversions); Mailman's list footer starts with a row of underscores too.
_SEPARATOR = re.compile(r"^\s*(-{5,}|_{5,})\s*$")
_UNDERSCORE_RULE = re.compile(r"^\s*_{5,}\s*$")
# "--" without the space is the delimiter as many clients (and people) type it.
_SIGNATURE = re.compile(
    r"^(--\s*|Sent from (my )?[\w-]+( [\w-]+){0,3}\.?|Get Outlook for \w+.*)$", re.IGNORECASE
)
_SIGN_OFF = re.compile(r"^-[A-Z][\w.']*( [A-Z][\w.']*){0,3}$")  # "-Dana", "-Abhishek Kona"


def strip_quoted(text: str) -> str:
    """The new part of a reply: quoted history and signature removed (the whole text if that
    would leave nothing)."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    kept: list[str] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        if _is_quoted(line):
            index += 1
            continue
        header = _quote_header_length(lines, index)
        if header:
            after = _next_written(lines, index + header)
            if after is None or not _is_quoted(lines[after]):
                break  # unquoted history: the rest is the old message
            index = after
            continue
        if _SIGNATURE.match(line.rstrip()) or _UNDERSCORE_RULE.match(line):
            break
        kept.append(line)
        index += 1
    stripped = "\n".join(_without_sign_off(_single_blank_lines(kept))).strip()
    return stripped or text.strip()


def _is_quoted(line: str) -> bool:
    return line.lstrip().startswith(">")


def _next_written(lines: list[str], start: int, within: int | None = None) -> int | None:
    end = len(lines) if within is None else min(len(lines), start + within)
    return next((i for i in range(start, end) if lines[i].strip()), None)


def _quote_header_length(lines: list[str], index: int) -> int:
    """How many lines the quote header at ``index`` spans (0: none starts there)."""
    line = lines[index]
    if _SEPARATOR.match(line):
        # The header sits right under the rule, at most a few blank lines below.
        after = _next_written(lines, index + 1, within=4)
        below = (
            0
            if after is None or _SEPARATOR.match(lines[after])
            else _quote_header_length(lines, after)
        )
        return after - index + below if after is not None and below else 0
    # Clients wrap long attribution lines: "On …, Name <\nname@x> wrote:".
    for count in (1, 2, 3):
        if _ATTRIBUTION.match(" ".join(lines[index : index + count])):
            return count
    if _ORIGINAL_MESSAGE.match(line):
        return 1 + _header_lines(lines, index + 1)
    if _HEADER_BLOCK_START.match(line) and any(
        _HEADER_BLOCK_NEXT.match(after) for after in lines[index + 1 : index + 4]
    ):
        return 1 + _header_lines(lines, index + 1)
    return 0


def _header_lines(lines: list[str], start: int) -> int:
    count = 0
    for line in lines[start:]:
        if not (_HEADER_BLOCK_START.match(line) or _HEADER_BLOCK_NEXT.match(line)):
            break
        count += 1
    return count


def _single_blank_lines(kept: list[str]) -> list[str]:
    """A removed quote leaves the blank lines around it: one blank line stands for it."""
    return [line for i, line in enumerate(kept) if line.strip() or i == 0 or kept[i - 1].strip()]


def _without_sign_off(kept: list[str]) -> list[str]:
    """Drop a ``-Name`` paragraph that ends the reply (a sign-off, not a list item)."""
    while kept and not kept[-1].strip():
        kept = kept[:-1]
    if len(kept) >= 3 and _SIGN_OFF.match(kept[-1].strip()) and not kept[-2].strip():
        return kept[:-1]
    return kept


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
