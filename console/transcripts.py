"""What the chat tester's window shows: each owner's conversations as the channel showed them.

The messages a tester typed and the replies the console's transport received, in order, per
owner and channel (``slack`` | ``whatsapp`` | ``email``). Kept in this process's memory, bounded
(:data:`KEEP` per conversation): the run, the inbox event and the delivery are the durable
record; this is the window's view of them (a restart starts with an empty window). A part is
stored once per (delivery, part): a retried delivery shows no second copy.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime

KEEP = 200
"""Messages kept per conversation: the window shows the last ones."""


@dataclass(frozen=True, slots=True)
class ChatLine:
    """One bubble: a message typed (``in``) or one part of a reply (``out``)."""

    seq: int
    owner: str
    kind: str
    direction: str
    text: str
    at: datetime
    subject: str | None = None
    part: int = 0
    parts: int = 1
    run_id: str | None = None
    event_id: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    """An email's header lines as the mail carried them (From, To, Subject…)."""
    ref: str | None = None
    """What the channel calls the message (a Slack ``ts``): reactions find it by this."""
    reactions: tuple[str, ...] = ()
    """Reaction names on the message (Slack's ``eyes`` while its run works, then a check)."""

    @property
    def key(self) -> str:
        """Which bubble this is, across updates (the page replaces it when it changes)."""
        if self.direction == "in":
            return f"in:{self.event_id or self.ref or self.seq}"
        return f"out:{self.run_id}:{self.part}"


@dataclass(slots=True)
class _Conversation:
    lines: deque[ChatLine] = field(default_factory=lambda: deque(maxlen=KEEP))
    delivered: dict[tuple[int, int], None] = field(default_factory=dict)
    """(delivery, part) shown, oldest first; as bounded as the lines (a retry comes soon)."""


class Transcripts:
    """Conversations by (owner, kind); :meth:`changed` wakes a window waiting for a new line."""

    def __init__(self) -> None:
        self._conversations: dict[tuple[str, str], _Conversation] = {}
        self._seq = itertools.count(1)
        self._changed = asyncio.Event()

    def _of(self, owner: str, kind: str) -> _Conversation:
        return self._conversations.setdefault((owner, kind), _Conversation())

    def add(self, line: ChatLine, *, delivery: tuple[int, int] | None = None) -> bool:
        """Append ``line`` (its ``seq`` replaced by the next one); ``False`` when ``delivery``
        (delivery id, part) was added before."""
        conversation = self._of(line.owner, line.kind)
        if delivery is not None:
            if delivery in conversation.delivered:
                return False
            conversation.delivered[delivery] = None
            if len(conversation.delivered) > KEEP:
                del conversation.delivered[next(iter(conversation.delivered))]
        conversation.lines.append(dataclasses.replace(line, seq=next(self._seq)))
        self._wake()
        return True

    def react(self, owner: str, kind: str, ref: str, name: str, *, added: bool) -> bool:
        """Add or remove reaction ``name`` on the message ``ref``; ``False`` when not kept."""
        conversation = self._conversations.get((owner, kind))
        if conversation is None:
            return False
        for index, line in enumerate(conversation.lines):
            if line.ref == ref:
                names = [other for other in line.reactions if other != name]
                if added:
                    names.append(name)
                # The same place, a new number: a window waiting after the old one gets it.
                conversation.lines[index] = dataclasses.replace(
                    line, seq=next(self._seq), reactions=tuple(names)
                )
                self._wake()
                return True
        return False

    def _wake(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def lines(self, owner: str, kind: str, *, after: int = 0) -> list[ChatLine]:
        """``owner``'s conversation as ``kind`` in order, the lines numbered after ``after``."""
        found = self._conversations.get((owner, kind))
        if found is None:
            return []
        return [line for line in found.lines if line.seq > after]

    def changed(self) -> asyncio.Event:
        """Set at the next :meth:`add` (take it before reading the lines)."""
        return self._changed
