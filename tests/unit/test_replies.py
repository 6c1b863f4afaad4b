"""DESIGN §9: which part of a workflow's answer becomes the reply."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from core.models import RunRecord, RunStatus
from core.replies import Reply, reply_for, reply_from_json


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("plain text", Reply(text="plain text")),
        ({"reply": "wins", "text": "loses"}, Reply(text="wins")),
        (
            {"reply": {"text": "see file", "attachments": ["https://x/a.pdf"]}},
            Reply(text="see file", attachments=("https://x/a.pdf",)),
        ),
        ({"text": "t", "message": "m"}, Reply(text="t")),
        ({"message": "m", "summary": "s"}, Reply(text="m")),
        ({"summary": "## Done"}, Reply(text="## Done")),
        (None, None),
        ({"reply": None, "text": "ignored"}, None),
        ("   ", None),
    ],
)
def test_reply_from_json(answer: Any, expected: Reply | None) -> None:
    assert reply_from_json(answer) == expected


def test_other_json_becomes_a_readable_block() -> None:
    reply = reply_from_json({"count": 3, "items": [1, 2]})
    assert reply is not None
    assert reply.text.startswith("```\n{") and '"count": 3' in reply.text


def record(status: RunStatus, body: bytes | None) -> RunRecord:
    return RunRecord(
        id="req_abc",
        owner_id="default",
        service_id="x",
        status=status,
        response_body=body,
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
    )


def test_failed_run_replies_with_one_line_naming_the_run() -> None:
    reply = reply_for(record(RunStatus.FAILED, b'{"detail": "Traceback (most recent call last)"}'))
    assert reply is not None and reply.failed
    assert "req_abc" in reply.text and "\n" not in reply.text and "Traceback" not in reply.text


def test_completed_run_reply_comes_from_its_body() -> None:
    assert reply_for(record(RunStatus.COMPLETED, json.dumps({"text": "hi"}).encode())) == Reply(
        text="hi"
    )
    assert reply_for(record(RunStatus.COMPLETED, b"not json")) == Reply(text="not json")
    assert reply_for(record(RunStatus.COMPLETED, b"null")) is None
