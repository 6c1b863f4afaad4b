"""The message a channel hands its workflow (DESIGN §9): one shape for Slack, WhatsApp and email.

Each channel's pure ``parse`` function builds an :class:`InboundMessage` from its wire payload;
``to_inputs`` is the JSON object the workflow receives (plus any fixed inputs of the route).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from core.clock import isoformat


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Person(_Frozen):
    """Who wrote the message: ``U123`` | ``whatsapp:+15551234567`` | ``alice@example.com``."""

    id: str
    name: str | None = None


class Conversation(_Frozen):
    """The chat, channel or email thread a message belongs to; replies go back into it."""

    id: str
    thread_id: str | None = None


class Attachment(_Frozen):
    """A file that came with a message, stored in our file store behind a signed download URI."""

    filename: str
    content_type: str
    size: int
    url: str


class InboundMessage(_Frozen):
    text: str
    channel: Literal["slack", "whatsapp", "email"]
    sender: Person
    conversation: Conversation
    subject: str | None = None
    attachments: tuple[Attachment, ...] = ()
    received_at: datetime
    event: dict[str, Any] = Field(default_factory=dict)
    """The channel's original payload, for workflows that need more."""

    def to_inputs(self, fixed: dict[str, Any] | None = None) -> dict[str, Any]:
        """The workflow's JSON inputs: this message, then a route's fixed inputs on top."""
        inputs = self.model_dump(mode="json")
        inputs["received_at"] = isoformat(self.received_at)
        if fixed:
            inputs.update(fixed)
        return inputs
