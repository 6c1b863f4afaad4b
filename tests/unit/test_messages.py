"""``InboundMessage.to_inputs`` is built by hand for speed: it must stay the generic dump."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from core.clock import isoformat
from core.messages import Attachment, Conversation, InboundMessage, Person


def _messages() -> list[InboundMessage]:
    moment = datetime(2026, 11, 22, 10, 1, 2, 345, tzinfo=UTC)
    return [
        InboundMessage(
            text="hi ✓",
            channel="whatsapp",
            sender=Person(id="whatsapp:+15005550006", name="Ann"),
            conversation=Conversation(id="whatsapp:+15005550006"),
            received_at=moment,
            event={"Body": "hi ✓", "media_errors": ["x"]},
        ),
        InboundMessage(
            text="report",
            channel="email",
            sender=Person(id="alice@example.com"),
            conversation=Conversation(id="<a@b>", thread_id="<root@b>"),
            subject="Q3",
            attachments=(
                Attachment(filename="a.pdf", content_type="application/pdf", size=3, url="u"),
            ),
            received_at=moment.astimezone(timezone(timedelta(hours=-5))),
            # Not JSON by itself: the generic dump converted such values, so must we.
            event={"at": moment, "parts": ("a", "b"), "nested": {"n": 1.5, "none": None}},
        ),
    ]


@pytest.mark.parametrize("message", _messages())
def test_to_inputs_is_the_json_dump_with_our_timestamp(message: InboundMessage) -> None:
    expected = message.model_dump(mode="json")
    expected["received_at"] = isoformat(message.received_at)
    inputs = message.to_inputs({"extra": 1})
    assert inputs == {**expected, "extra": 1}
    # Same field order: the run's JSON body is byte for byte what it was.
    assert json.dumps(inputs) == json.dumps({**expected, "extra": 1})


def test_isoformat_is_utc_with_microseconds_and_z() -> None:
    moment = datetime(2026, 1, 2, 3, 4, 5, 7, tzinfo=timezone(timedelta(hours=2)))
    assert isoformat(moment) == "2026-01-02T01:04:05.000007Z"
    assert isoformat(datetime(2026, 1, 2, tzinfo=UTC)) == "2026-01-02T00:00:00.000000Z"
    assert isoformat(None) is None
