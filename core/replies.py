"""What a run says back (DESIGN §9), independent of the channel that carries it.

The reply is taken from the workflow's JSON response: a JSON string is the text; in an object,
``reply`` wins (a string, or an object with ``text`` and optional ``attachments``), then ``text``,
``message``, ``summary``; any other JSON is shown as a readable block; ``null`` or
``{"reply": null}`` means "no reply". A failed run replies with one short line naming the run.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from core.json_input import parse_json
from core.models import RunRecord, RunStatus

TEXT_KEYS = ("text", "message", "summary")
DEFAULT_FAILURE_LINE = "Sorry, that did not work (run {run_id} {status})."


class Reply(BaseModel):
    """A channel-neutral answer: Markdown text and attachment URLs."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    text: str = ""
    attachments: tuple[str, ...] = Field(default=())
    failed: bool = False


def reply_for(record: RunRecord, *, failure_line: str = DEFAULT_FAILURE_LINE) -> Reply | None:
    """The reply a finished run sends to its origin, or ``None`` for "no reply"."""
    if record.status is not RunStatus.COMPLETED:
        line = failure_line.format(run_id=record.id, status=record.status.value)
        return Reply(text=line, failed=True)
    if record.response_body is None:
        return None
    try:
        answer = parse_json(record.response_body, what="the response")
    except ValueError:  # not JSON, or too deep to render: the text as it came
        text = record.response_body.decode("utf-8", "replace").strip()
        return Reply(text=text) if text else None
    return reply_from_json(answer)


def reply_from_json(answer: Any) -> Reply | None:
    if answer is None:
        return None
    if isinstance(answer, str):
        return Reply(text=answer) if answer.strip() else None
    if isinstance(answer, dict):
        if "reply" in answer:
            return _from_reply_field(answer["reply"])
        for key in TEXT_KEYS:
            if isinstance(answer.get(key), str):
                return Reply(text=answer[key])
    return Reply(text="```\n" + json.dumps(answer, indent=2, ensure_ascii=False) + "\n```")


def _from_reply_field(reply: Any) -> Reply | None:
    if reply is None:
        return None
    if isinstance(reply, str):
        return Reply(text=reply)
    if isinstance(reply, dict):
        attachments = reply.get("attachments") or []
        return Reply(
            text=str(reply.get("text") or ""),
            attachments=tuple(str(url) for url in attachments if isinstance(url, str)),
        )
    return Reply(text=json.dumps(reply, ensure_ascii=False))


class Delivery(BaseModel):
    """One reply on its way to one target (a row of the outbox)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: int
    run_id: str
    channel: str
    target: dict[str, Any]
    reply: Reply | None
    record: dict[str, Any]
    """The run's request record (``RunRecord.to_api()``), for targets that want all of it."""
    attempts: int
    progress: int
    interrupted: bool = False
    """The previous attempt ended with nothing recorded (its sender died, or stalled past its
    lease, mid-send): parts from ``progress`` on may have reached the provider already. A sender
    whose provider can be asked checks before sending them again."""

    @property
    def in_doubt(self) -> bool:
        """Whether parts from ``progress`` on may be at the provider already: the previous
        attempt was interrupted, or ended in a timeout or lost connection after its request
        went out (the provider may have acted on it; bench.chaos saw both)."""
        return self.interrupted or self.attempts > 1


class SendResult(BaseModel):
    """How one attempt to send a delivery went."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    outcome: str = Field(pattern="^(sent|retry|failed)$")
    error: str | None = None
    provider_id: str | None = None
    retry_after: float | None = None
    progress: int = 0
    """Parts sent so far (multi-message replies resume after them on a retry)."""

    @classmethod
    def sent(cls, provider_id: str | None = None, *, progress: int = 0) -> SendResult:
        return cls(outcome="sent", provider_id=provider_id, progress=progress)

    @classmethod
    def retry(cls, error: str, *, after: float | None = None, progress: int = 0) -> SendResult:
        return cls(outcome="retry", error=error, retry_after=after, progress=progress)

    @classmethod
    def failed(cls, error: str, *, progress: int = 0) -> SendResult:
        return cls(outcome="failed", error=error, progress=progress)
