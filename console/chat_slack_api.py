"""Slack's Web API as the chat tester's transport: what slack_sdk's client sends through its
aiohttp session is answered here, in process, and a posted message is taken for the window.

``SlackSender`` talks to Slack only through ``AsyncWebClient``s on the session it is given; the
tester gives it :class:`WindowSession`, which answers the methods a reply uses
(``chat.postMessage``, ``reactions.add``/``remove``, ``conversations.replies``/``history``) the
way Slack does (HTTP 200, ``ok``) and refuses the rest (``unknown_method``). Nothing leaves the
process.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from multidict import CIMultiDict, CIMultiDictProxy

ANSWERED = frozenset(
    {
        "chat.postMessage",
        "reactions.add",
        "reactions.remove",
        "conversations.replies",
        "conversations.history",
    }
)


@dataclass(frozen=True, slots=True)
class Posted:
    """One ``chat.postMessage``: its text and the delivery and part its metadata names."""

    channel: str
    text: str
    delivery: int
    part: int


Reacted = Callable[[str, str, str, bool], None]
"""Receives ``(channel, message ts, reaction name, added)`` for each reaction call."""


@dataclass(slots=True)
class WindowSession:
    """Quacks like the ``aiohttp.ClientSession`` slack_sdk uses (``closed``, ``request``)."""

    on_reaction: Reacted | None = None
    posted: list[Posted] = field(default_factory=list)
    closed: bool = False

    def request(self, method: str, url: str, **kwargs: Any) -> _Answer:
        name = url.rstrip("/").rpartition("/")[2]
        body = _body_of(kwargs)
        if name not in ANSWERED:
            return _Answer({"ok": False, "error": "unknown_method"})
        if name == "chat.postMessage":
            metadata = body.get("metadata") or {}
            if isinstance(metadata, str):
                metadata = json.loads(metadata)
            payload = metadata.get("event_payload") or {}
            self.posted.append(
                Posted(
                    channel=str(body.get("channel") or ""),
                    text=str(body.get("text") or ""),
                    delivery=int(payload.get("delivery", -1)),
                    part=int(payload.get("part", len(self.posted))),
                )
            )
            return _Answer({"ok": True, "channel": body.get("channel"), "ts": _ts(self)})
        if name.startswith("conversations."):
            return _Answer({"ok": True, "messages": [], "has_more": False})
        if self.on_reaction is not None:
            self.on_reaction(
                str(body.get("channel") or ""),
                str(body.get("timestamp") or ""),
                str(body.get("name") or ""),
                name == "reactions.add",
            )
        return _Answer({"ok": True})


def _ts(session: WindowSession) -> str:
    return f"1.{len(session.posted):06d}"


def _body_of(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The call's arguments, whether slack_sdk sent them as JSON or as a form."""
    for key in ("json", "data", "params"):
        value = kwargs.get(key)
        if isinstance(value, Mapping):
            return dict(value)
    return {}


class _Answer:
    """The response slack_sdk reads (an async context manager, as aiohttp's is)."""

    content_type = "application/json"
    status = 200

    def __init__(self, body: dict[str, Any]) -> None:
        self._body = body
        self.headers = CIMultiDictProxy(CIMultiDict({"Content-Type": "application/json"}))

    async def __aenter__(self) -> _Answer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def json(self) -> dict[str, Any]:
        return self._body

    async def text(self) -> str:
        return json.dumps(self._body)

    async def read(self) -> bytes:
        return json.dumps(self._body).encode()
