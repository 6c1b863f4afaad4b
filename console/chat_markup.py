"""Slack mrkdwn and WhatsApp text as the chat tester's window shows them: safe HTML.

Every character of the message is escaped first; only then do the channel's own marks become
elements (``*bold*``, ``_italic_``, ``~strike~``, `` `code` ``, fenced code, ``> `` quotes, and
Slack's ``<url|label>`` links, which become links only for http(s) and mailto URLs). So a reply
can never inject markup, whatever it contains; the page's CSP forbids inline script anyway.
"""

from __future__ import annotations

import re

from markupsafe import Markup, escape

_FENCE = re.compile(r"```\n?(.*?)\n?```", re.DOTALL)
_SLACK_LINK = re.compile(r"<([^<>|]+)(?:\|([^<>]*))?>")
_MARKS = (
    (re.compile(r"`([^`\n]+)`"), "code"),
    (re.compile(r"(?<![\w*])\*(?=\S)([^*\n]*?\S)\*(?![\w*])"), "strong"),
    (re.compile(r"(?<![\w])_(?=\S)([^_\n]*?\S)_(?![\w])"), "em"),
    (re.compile(r"(?<![\w~])~(?=\S)([^~\n]*?\S)~(?![\w~])"), "del"),
)
_SAFE_SCHEMES = ("http://", "https://", "mailto:")


def slack_html(mrkdwn: str) -> Markup:
    """A Slack message (mrkdwn, with ``&amp;`` ``&lt;`` ``&gt;`` entities) as HTML."""
    return _blocks(mrkdwn, slack=True)


def whatsapp_html(text: str) -> Markup:
    """A WhatsApp message (its own marks, no entities, links as plain text) as HTML."""
    return _blocks(text, slack=False)


def _blocks(text: str, *, slack: bool) -> Markup:
    out: list[str] = []
    last = 0
    for fence in _FENCE.finditer(text):
        out.append(_lines(text[last : fence.start()], slack=slack))
        code = _unescape(fence.group(1)) if slack else fence.group(1)
        out.append(f"<pre><code>{escape(code)}</code></pre>")
        last = fence.end()
    out.append(_lines(text[last:], slack=slack))
    return Markup("".join(out))  # noqa: S704  # every piece escaped above


def _lines(text: str, *, slack: bool) -> str:
    rendered: list[str] = []
    quote: list[str] = []
    for line in text.strip("\n").split("\n") if text.strip("\n") else []:
        if line == ">" or line.startswith("> "):  # a quote (Slack escapes a literal ">")
            quote.append(_inline(line[2:], slack=slack))
            continue
        if quote:
            rendered.append("<blockquote>" + "<br>".join(quote) + "</blockquote>")
            quote = []
        rendered.append(_inline(line, slack=slack) + "<br>")
    if quote:
        rendered.append("<blockquote>" + "<br>".join(quote) + "</blockquote>")
    return "".join(rendered)


def _inline(line: str, *, slack: bool) -> str:
    if not slack:
        return _marks(str(escape(line)))
    out: list[str] = []
    last = 0
    for link in _SLACK_LINK.finditer(line):
        out.append(_marks(str(escape(_unescape(line[last : link.start()])))))
        out.append(_link(link.group(1), link.group(2)))
        last = link.end()
    out.append(_marks(str(escape(_unescape(line[last:])))))
    return "".join(out)


def _link(target: str, label: str | None) -> str:
    url = _unescape(target)
    shown = _unescape(label) if label else url
    if url.startswith(("@", "#", "!")):  # a mention: <@U123>, <#C123>, <!here>
        return f'<span class="mention">{escape(shown if label else url)}</span>'
    if not url.lower().startswith(_SAFE_SCHEMES):
        return str(escape(shown))
    return f'<a href="{escape(url)}" rel="noopener noreferrer">{_marks(str(escape(shown)))}</a>'


def _marks(escaped: str) -> str:
    """The channel's inline marks on text already escaped (marks are not HTML characters)."""
    for pattern, tag in _MARKS:
        escaped = pattern.sub(rf"<{tag}>\1</{tag}>", escaped)
    return escaped


def _unescape(text: str) -> str:
    """Slack's three entities (the only ones mrkdwn has) back to characters."""
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
