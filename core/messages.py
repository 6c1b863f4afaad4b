"""The message a channel hands its workflow (DESIGN §9): one shape for Slack, WhatsApp and email.

Each channel's pure ``parse`` function builds an :class:`InboundMessage` from its wire payload;
``to_inputs`` is the JSON object the workflow receives (plus any fixed inputs of the route), and
:func:`run_request_for` the run every channel submits for a message.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic_core import to_jsonable_python

from core.clock import isoformat
from core.models import ReplyTarget, RunRequest, Source


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
        """The workflow's JSON inputs: this message, then a route's fixed inputs on top.

        The same dict as ``model_dump(mode="json")`` (field order included, so the JSON body is
        byte for byte what it was) with ``received_at`` in our ``Z`` form, built by hand: on
        every intake's ack path the generic dump cost as much as the rest of the run request.
        tests/unit/test_messages.py holds the two equal.
        """
        sender, conversation = self.sender, self.conversation
        inputs: dict[str, Any] = {
            "text": self.text,
            "channel": self.channel,
            "sender": {"id": sender.id, "name": sender.name},
            "conversation": {"id": conversation.id, "thread_id": conversation.thread_id},
            "subject": self.subject,
            "attachments": [file.model_dump() for file in self.attachments],  # str and int only
            "received_at": isoformat(self.received_at),
            # Payload values are JSON already (form fields, a JSON event), but ``Any`` may
            # hold more: converted the way the generic dump did.
            "event": to_jsonable_python(self.event),
        }
        if fixed:
            inputs.update(fixed)
        return inputs


def run_request_for(
    message: InboundMessage,
    *,
    owner_id: str,
    workflow: str,
    fixed_inputs: dict[str, Any] | None,
    reply_target: ReplyTarget,
    idempotency_key: str | None,
    serial_key: str,
    context: dict[str, str] | None = None,
) -> RunRequest:
    """The run for a message a channel received: ``workflow`` gets :meth:`InboundMessage.to_inputs`
    as its JSON body; the run's source is the message's channel."""
    return RunRequest(
        owner_id=owner_id,
        service_id=workflow,
        body=json.dumps(message.to_inputs(fixed_inputs), ensure_ascii=False),
        source=Source(message.channel),
        reply_target=reply_target,
        idempotency_key=idempotency_key,
        serial_key=serial_key,
        context=context or {},
    )
