"""The chat tester page: speak as a Slack user, a WhatsApp user or an email sender, and watch
the answer arrive as that channel renders it (``console.chat_channel`` walks the real path).

``GET /console/chat?as=<kind>`` shows the signed-in owner's conversation; ``POST
/console/chat/messages`` sends one message (JSON for the page's script, a redirect back for a
plain form); ``GET /console/chat/events?as=&after=`` streams each new line (server-sent events,
woken by the transcript, no polling). Every owner sees only its own conversations.
"""

from __future__ import annotations

import uuid

from aiohttp import web
from markupsafe import Markup

from console.chat_channel import ConsoleChat
from console.chat_markup import slack_html, whatsapp_html
from console.chat_parts import KINDS
from console.render import ENVIRONMENT, Signed, changing, page, signed_in
from console.streams import STREAMS
from console.transcripts import ChatLine
from core.errors import BadRequest

LABELS = {
    "slack": "as a Slack user",
    "whatsapp": "as a WhatsApp user",
    "email": "as an email sender",
}
WAIT_SECONDS = 15.0
"""A stream with nothing new sends a comment this often (proxies close silent connections)."""


def _chat(signed: Signed) -> ConsoleChat:
    if signed.deps.chat is None:
        raise web.HTTPServiceUnavailable(text="the chat tester runs where the server runs")
    return signed.deps.chat


def _kind(value: str | None) -> str:
    kind = value or KINDS[0]
    if kind not in KINDS:
        raise BadRequest(f"as: one of {', '.join(KINDS)}")
    return kind


def markup(line: ChatLine) -> Markup:
    """A line's text as its channel shows it (email: plain text, kept by the template)."""
    if line.direction == "out" and line.kind == "slack":
        return slack_html(line.text)
    if line.direction == "out" and line.kind == "whatsapp":
        return whatsapp_html(line.text)
    return Markup("")


EMOJI = {"eyes": "👀", "white_check_mark": "✅", "x": "❌"}
"""How the window shows the reactions Slack's sender uses by default; others as ``:name:``."""


def render_line(line: ChatLine) -> str:
    return ENVIRONMENT.get_template("_chat_line.html").render(line=line, markup=markup, emoji=EMOJI)


async def chat_page(request: web.Request) -> web.Response:
    signed = await signed_in(request)
    kind = _kind(request.query.get("as"))
    lines = _chat(signed).transcripts.lines(signed.session.owner_id, kind)
    return page(
        request,
        "chat.html",
        signed,
        kind=kind,
        labels=LABELS,
        lines=lines,
        after=lines[-1].seq if lines else 0,
        render_line=render_line,
        message_id=uuid.uuid4().hex,
    )


async def send_message(request: web.Request) -> web.StreamResponse:
    """``POST /console/chat/messages``: ``as``, ``text``, ``subject`` (email), ``message_id``."""
    signed, form = await changing(request)
    kind = _kind(form.get("as"))
    accepted = await _chat(signed).say(
        signed.session.owner_id,
        kind,
        form.get("text", ""),
        subject=form.get("subject", ""),
        message_id=form.get("message_id", ""),
    )
    if request.headers.get("X-CSRF-Token"):
        return web.json_response(
            {"event_id": accepted.id, "duplicate": accepted.duplicate, "held": accepted.held},
            status=200 if accepted.duplicate else 201,
        )
    raise web.HTTPSeeOther(f"/console/chat?as={kind}")


async def chat_events(request: web.Request) -> web.StreamResponse:
    """``GET /console/chat/events?as=&after=``: a ``line`` event (the bubble's HTML) for each
    line of the owner's conversation after ``after``, as it is added."""
    signed = await signed_in(request)
    kind = _kind(request.query.get("as"))
    after_text = request.query.get("after", "0")
    if not after_text.isdigit():
        raise BadRequest("after: a line number")
    after = int(after_text)
    transcripts = _chat(signed).transcripts
    owner = signed.session.owner_id
    async with request.app[STREAMS].open(request) as stream:
        await stream.send("ready", {"after": after})
        while stream.open:
            changed = transcripts.changed()
            for line in transcripts.lines(owner, kind, after=after):
                await stream.send(
                    "line",
                    {
                        "seq": line.seq,
                        "key": line.key,
                        "direction": line.direction,
                        "html": render_line(line),
                    },
                )
                after = max(after, line.seq)  # an updated line keeps its place
            if not await stream.wait(changed, WAIT_SECONDS):
                await stream.comment()
    return stream.response
