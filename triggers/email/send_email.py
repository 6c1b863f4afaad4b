"""The built-in service ``send_email`` (``POST /run/send_email``): a workflow sends a mail.

Inputs: ``to`` (an address or a list), ``cc``, ``bcc``, ``subject``, ``body`` (Markdown),
``reply_to``, ``attachments`` (signed download URIs of our file store, as ``POST /file`` or an
upload with codewords-client gives them; read from disk when the mail is sent, never fetched over
HTTP, so no URL can make the server reach into its own network). Invalid inputs end the run with
HTTP 400 and a ``detail`` naming the field. A valid mail is queued in the delivery outbox under
this run (its one delivery row), and the run answers ``{"message_id": …}`` at once; the outbox
sends it with retries. The Message-ID is derived from the run id, so a run that is executed again
(its worker died) finds its queued mail instead of queueing a second one.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from core.errors import Forbidden
from core.models import CallerRights, Grant, Invocation, Outcome
from core.ports import LogSink, MessageQueue, OwnMessage, Queueing
from triggers.email.sender import mail_domain, message_id_for
from triggers.email.settings import EmailSettings
from triggers.files import FileStore

_ADDRESS = re.compile(r"^[^@\s<>,;\"]+@[^@\s<>,;\"]+\.[^@\s<>,;\"]+$")


def _addresses(value: Any) -> list[str]:
    if value is None:
        return []
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list):
        raise ValueError("give an address or a list of addresses")
    cleaned = []
    for item in items:
        if not isinstance(item, str) or not _ADDRESS.match(item.strip()):
            raise ValueError(f"{item!r} is not an email address (name@example.com)")
        cleaned.append(item.strip())
    return cleaned


class SendEmailRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    to: list[str] = Field(min_length=1, max_length=50)
    cc: list[str] = Field(default_factory=list, max_length=50)
    bcc: list[str] = Field(default_factory=list, max_length=50)
    subject: str = Field(min_length=1, max_length=998)
    body: str = Field(max_length=1_000_000)
    reply_to: str | None = None
    attachments: list[str] = Field(default_factory=list, max_length=20)

    @field_validator("to", "cc", "bcc", mode="before")
    @classmethod
    def _check_addresses(cls, value: Any) -> list[str]:
        return _addresses(value)

    @field_validator("reply_to", mode="before")
    @classmethod
    def _check_reply_to(cls, value: Any) -> str | None:
        found = _addresses(value)
        return found[0] if found else None

    @field_validator("subject")
    @classmethod
    def _one_line(cls, value: str) -> str:
        if "\r" in value or "\n" in value:
            raise ValueError("the subject must be one line")
        return value.strip()

    @field_validator("attachments")
    @classmethod
    def _our_files(cls, value: list[str], info: ValidationInfo) -> list[str]:
        files = (info.context or {}).get("files")
        if not isinstance(files, FileStore):
            raise TypeError("send_email validation needs the file store as context")
        for index, url in enumerate(value):
            try:
                files.file_id_of(url)
            except Forbidden as exc:
                raise ValueError(
                    f"item {index}: {exc.detail}; give a signed file URI from this "
                    "Switchboard's file store (POST /file, or upload_file_content with "
                    "codewords-client)"
                ) from exc
        return value


class SendEmailService:
    """A ``core.ports.BuiltinService``: validates, queues the mail, returns its Message-ID.

    The mail is queued through the outbox's port (``core.ports.MessageQueue``): ``dispatch``
    owns the deliveries and the runs they belong to."""

    def __init__(self, settings: EmailSettings, messages: MessageQueue, files: FileStore) -> None:
        self._messages = messages
        self._domain = mail_domain(settings)
        self._files = files
        self._per_hour = settings.send_email_per_hour

    async def __call__(self, invocation: Invocation, on_log: LogSink) -> Outcome:
        refusal = CallerRights.of_run(invocation.headers).refusal(Grant.OUTBOUND, "send email")
        if refusal is not None:
            on_log("stderr", f"send_email: {refusal}")
            return _refused(refusal)
        try:
            request = SendEmailRequest.model_validate(
                json.loads(invocation.body or b"null"), context={"files": self._files}
            )
        except ValueError as exc:
            return _bad_request(_explain(exc))
        message_id = message_id_for(invocation.run_id, self._domain)
        queued = await self._messages.queue(
            OwnMessage(
                run_id=invocation.run_id,
                owner_id=invocation.owner_id,
                service_id=invocation.service_id,
                target=_target(request, message_id),
                text=request.body,
                attachments=tuple(request.attachments),
                per_hour=self._per_hour,
            )
        )
        if queued.outcome is Queueing.HAS_REPLY_TARGET:
            # The mail is the run's one delivery.
            return _bad_request("send_email sends its own mail: start it without a reply target")
        if queued.outcome is Queueing.RATE_LIMITED:
            return _too_many(self._per_hour, queued.retry_after or 1)
        done = "queued" if queued.outcome is Queueing.QUEUED else "already queued"
        on_log("stdout", f"send_email: {done} {message_id}")
        body = json.dumps({"message_id": message_id, "to": request.to}).encode()
        return Outcome.from_response(200, body, "application/json")


def _target(request: SendEmailRequest, message_id: str) -> dict[str, Any]:
    # The outbox orders deliveries per thread (dispatch.outbox.target_key). Each send_email
    # mail starts its own, named by its Message-ID: nothing to wait for.
    return {
        "channel": "email",
        "address": request.to[0],
        "thread_id": message_id,
        "details": {
            "subject": request.subject,
            "to": request.to,
            "cc": request.cc,
            "bcc": request.bcc,
            "reply_to": request.reply_to,
            "message_id": message_id,
        },
    }


def _explain(error: ValueError) -> str:
    if isinstance(error, ValidationError):
        problems = []
        for item in error.errors():
            where = ".".join(str(part) for part in item["loc"]) or "inputs"
            problems.append(f"{where}: {item['msg']}")
        return "invalid send_email inputs: " + "; ".join(problems)
    return f"send_email takes a JSON object: {error}"


def _too_many(per_hour: int, wait: int) -> Outcome:
    detail = f"send_email: this owner queued {per_hour} mails in the last hour; try in {wait} s"
    return _json_error(429, {"detail": detail, "retry_after": wait})


def _refused(detail: str) -> Outcome:
    return _json_error(403, {"detail": detail})


def _json_error(status: int, payload: dict[str, object]) -> Outcome:
    return Outcome.from_response(status, json.dumps(payload).encode(), "application/json")


def _bad_request(detail: str) -> Outcome:
    body = json.dumps({"detail": detail}).encode()
    return Outcome.from_response(400, body, "application/json")
