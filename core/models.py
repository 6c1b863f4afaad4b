"""Boundary models: what intake submits, what a run is, what the runner gets and gives back."""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ByteSize, ConfigDict, Field, field_validator

from core.clock import isoformat
from core.errors import Forbidden
from core.json_input import parse_json
from core.log_levels import level_of_line


class RunStatus(StrEnum):
    PROVISIONED = "provisioned"
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in FINISHED_STATUSES


FINISHED_STATUSES = frozenset(
    {RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.TIMED_OUT, RunStatus.CANCELLED}
)


class Source(StrEnum):
    API = "api"
    SLACK = "slack"
    WHATSAPP = "whatsapp"
    EMAIL = "email"
    SCHEDULE = "schedule"
    REPLAY = "replay"
    """An operator's replay of an earlier run (``/api/v1/runs/{id}/replay``)."""


def new_run_id() -> str:
    """``req_`` + the time in µs (13 hex digits) + 64 random bits (16 hex digits).

    Time first so that ids sort by creation and new rows land at the end of the primary-key
    index instead of on random pages (fewer dirty pages per commit); the random part keeps ids
    unguessable. 33 characters: short enough for socket paths.
    """
    return f"req_{time.time_ns() // 1000:013x}{secrets.token_hex(8)}"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ReplyTarget(_Frozen):
    """Where a run's answer goes (DESIGN §2): channel kind + address + thread."""

    channel: Literal["none", "api", "slack", "whatsapp", "email", "webhook"] = "api"
    address: str | None = None
    thread_id: str | None = None
    details: dict[str, Any] = Field(default_factory=dict)


class RunRequest(_Frozen):
    """What an intake hands the queue: one event turned into a run to execute."""

    owner_id: str
    service_id: str
    path: str = ""
    method: Literal["GET", "POST"] = "POST"
    body: str | None = Field(default=None, description="the inputs as JSON text")
    source: Source = Source.API
    reply_target: ReplyTarget | None = None
    idempotency_key: str | None = None
    correlation_id: str | None = None
    caller_id: str | None = None
    serial_key: str | None = Field(
        default=None,
        description="runs sharing this key run one at a time in arrival order (one chat, "
        "one schedule with overlap 'queue'); other runs are not held back",
    )
    context: dict[str, str] = Field(default_factory=dict)
    provisioned_run_id: str | None = Field(
        default=None, description="fill this provisioned husk instead of creating a new run"
    )
    run_id: str | None = Field(default=None, description="use this id for a new run")
    workflow_version: int | None = Field(
        default=None, description="run this version of the workflow, not the current one"
    )
    replay_of: str | None = Field(default=None, description="the run this one replays")


@dataclass(frozen=True, slots=True)
class SubmittedRun:
    """What an intake learns once its run request is committed (a plain class: hot path)."""

    id: str
    status: RunStatus
    created: bool
    """``False`` when an earlier submission (same idempotency key) already made this run."""


@dataclass(frozen=True, slots=True)
class RunSummary:
    """A run in a list (a schedule's history): who it is and how it stands, no bodies."""

    id: str
    status: RunStatus
    idempotency_key: str | None
    created_at: datetime
    completed_at: datetime | None


class RunRecord(_Frozen):
    """One run as stored."""

    id: str
    owner_id: str
    caller_id: str | None = None
    service_id: str
    workflow_version: int | None = None
    path: str = ""
    method: str = "POST"
    status: RunStatus
    source: Source = Source.API
    reply_target: dict[str, Any] | None = None
    correlation_id: str | None = None
    serial_key: str | None = None
    context: dict[str, str] | None = None
    request_body: str | None = None
    response_status: int | None = None
    response_body: bytes | None = None
    response_content_type: str | None = None
    error: str | None = None
    attempts: int = 0
    replay_of: str | None = None
    created_at: datetime
    queued_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None

    @property
    def finished(self) -> bool:
        return self.status.finished

    def to_api(self) -> dict[str, Any]:
        """The request record of PROTOCOLS part A (``/result`` and ``/request`` bodies)."""
        record: dict[str, Any] = {
            "request_id": self.id,
            "service_id": self.service_id,
            "path": self.path,
            "method": self.method,
            "status": self.status.value,
            "source": self.source.value,
            "createdAt": isoformat(self.created_at),
            "queuedAt": isoformat(self.queued_at),
            "startedAt": isoformat(self.started_at),
            "completedAt": isoformat(self.completed_at),
            "durationMs": _duration_ms(self.started_at, self.completed_at),
            "requestJson": _json_or_none(self.request_body),
            "responseStatus": self.response_status,
            "responseJson": None,
            "error": self.error,
            "correlationId": self.correlation_id,
            "callerId": self.caller_id,
            "workflowVersion": self.workflow_version,
            "attempts": self.attempts,
        }
        if self.response_body is not None:
            try:
                record["responseJson"] = parse_json(self.response_body, what="the response")
            except ValueError:  # not JSON, or JSON we refuse (too deep, NaN): shown as text
                record["responseText"] = self.response_body.decode("utf-8", "replace")
        return record


def _duration_ms(start: datetime | None, end: datetime | None) -> int | None:
    if start is None or end is None:
        return None
    return round((end - start).total_seconds() * 1000)


def _json_or_none(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return parse_json(text, what="the request")
    except ValueError:
        return text


class LogEntry(_Frozen):
    """One line a run wrote (or Switchboard wrote about it: stream ``system``)."""

    id: int
    run_id: str
    created_at: datetime
    stream: Literal["stdout", "stderr", "system"]
    message: str

    def to_api(self) -> dict[str, Any]:
        return {
            "createdAt": isoformat(self.created_at),
            "stream": self.stream,
            # The stream is kept; a level only where the line states one (Switchboard's own
            # lines are information unless they say otherwise).
            "level": level_of_line(self.message) or ("info" if self.stream == "system" else None),
            "message": self.message,
            "request_id": self.run_id,
        }


class Grant(StrEnum):
    """What a workflow's run key may do beyond starting and reading its owner's runs (README
    'Run keys'): asked for in the workflow's header, ``[tool.switchboard] grants = [...]``."""

    SCHEDULES = "schedules"
    """create, change, run and read its owner's schedules (``/schedules``, ``schedule_runs``)"""
    FILES = "files"
    """look up any file of its owner by id (``GET /file/{id}``); uploading needs no grant"""
    OUTBOUND = "outbound"
    """have the server send out for it (``send_email``, schedule targets other than ``none``);
    implied by ``network = "internet"``"""
    SECRETS = "secrets"
    """add and delete its owner's secrets (``manage_user_secrets``, ``/api/v1/secrets``) and list
    all their names; without it a run reads and lists only the names its workflow declares"""


CALLER_GRANTS_HEADER = "X-Switchboard-Caller-Grants"
"""Context of a run started with a run key: the grants of that key (comma-separated, maybe
empty). Built-in services read it; a run without it was started with a full owner key."""


@dataclass(frozen=True, slots=True)
class CallerRights:
    """What the caller of a run or a request may do: ``grants`` ``None`` is a full owner key."""

    grants: frozenset[Grant] | None = None

    def allows(self, grant: Grant) -> bool:
        return self.grants is None or grant in self.grants

    def context(self) -> dict[str, str]:
        """The run context that carries these rights to the run they start."""
        if self.grants is None:
            return {}
        return {CALLER_GRANTS_HEADER: ",".join(sorted(self.grants))}

    @classmethod
    def of_run(cls, headers: dict[str, str]) -> CallerRights:
        """The rights of whoever started the run with these headers (its context included)."""
        value = headers.get(CALLER_GRANTS_HEADER)
        if value is None:
            return cls()
        known = {grant.value for grant in Grant}  # a name this version lacks grants nothing
        return cls(frozenset(Grant(name) for name in value.split(",") if name in known))

    def refusal(self, grant: Grant, what: str) -> str | None:
        """``None`` when allowed, else the ``detail`` of the 403 that refuses ``what``."""
        if self.allows(grant):
            return None
        why = (
            'its workflow has network = "none"'
            if grant is Grant.OUTBOUND
            else "its workflow did not ask for it"
        )
        return (
            f"a run key cannot {what}: {why}; add {grant.value!r} to `grants` in the workflow's "
            "[tool.switchboard] header to allow it"
        )

    def require(self, grant: Grant, what: str) -> None:
        """Raise :class:`~core.errors.Forbidden` (403) with :meth:`refusal` unless allowed."""
        refusal = self.refusal(grant, what)
        if refusal is not None:
            raise Forbidden(refusal)


OWNER_RIGHTS = CallerRights()
"""A full owner key's rights (every reusable ``cwk-`` key, the CLI, the config file)."""


GIB = 1024**3
MIB = 1024**2


class WorkflowLimits(_Frozen):
    """What one run of a workflow may use (DESIGN §5): the sandbox enforces it, errors name it.

    Defaults come from ``[runtime.limits]``; a workflow overrides any of them in its PEP 723 header
    (``[tool.switchboard]``). Sizes are bytes, or strings such as ``"512MiB"`` / ``"2 GiB"``.
    """

    memory: ByteSize = Field(default=ByteSize(2 * GIB), ge=16 * MIB, description="swap is 0")
    pids: int = Field(default=256, ge=8, description="processes and threads at once")
    cpu: float = Field(default=1.0, gt=0, le=256, description="CPUs' worth of time")
    tmp_size: ByteSize = Field(default=ByteSize(256 * MIB), ge=MIB, description="tmpfs /tmp")
    network: Literal["none", "internet"] = Field(
        default="internet", description="internet: slirp4netns, never the host's loopback"
    )
    timeout: float | None = Field(
        default=None, gt=0, description="seconds; default: the runtime's run_timeout"
    )
    open_files: int = Field(default=1024, ge=64, description="RLIMIT_NOFILE")
    file_size: ByteSize = Field(default=ByteSize(GIB), ge=MIB, description="RLIMIT_FSIZE")
    grants: tuple[Grant, ...] = Field(
        default=(),
        description="what the run key may do beyond running and reading its owner's runs "
        "(README 'Run keys'): schedules, files, outbound, secrets",
    )
    warm: bool = Field(
        default=False,
        description="keep the process, idle, for the next run of the same version by the same "
        "owner with the same limits (opt-in; README 'Warm reuse')",
    )

    @field_validator("grants")
    @classmethod
    def _each_grant_once(cls, grants: tuple[Grant, ...]) -> tuple[Grant, ...]:
        return tuple(sorted(set(grants)))


def format_bytes(size: int) -> str:
    """``2 GiB``, ``256 MiB``, ``1.5 GiB``: sizes as limit errors name them."""
    for unit, factor in (("GiB", GIB), ("MiB", MIB), ("KiB", 1024)):
        if size >= factor:
            return f"{size / factor:g} {unit}"
    return f"{size} bytes"


RUNTIME_VARIABLES = frozenset(
    {
        "PORT",
        "LOGLEVEL",
        "CODEWORDS_API_KEY",
        "CODEWORDS_RUNTIME_URI",
        "RUNTIME_URI",
        "CODEWORDS_SERVICE_ROOT",
        "HOME",
        "TMPDIR",
        "PATH",
        "LANG",
        "PYTHONUNBUFFERED",
    }
)
"""Variables the runtime sets for every run: a workflow may declare them (the seeds declare
``PORT=8000`` and ``CODEWORDS_API_KEY``), but their value is the runtime's, never a secret's."""


class DeclaredVariable(_Frozen):
    """One entry of a workflow's ``[tool.env-checker] env_vars`` (issue 14): ``"NAME"`` must be
    provided (by a secret), ``"NAME=default"`` falls back to ``default``."""

    name: str
    default: str | None = None

    @property
    def from_runtime(self) -> bool:
        """Whether the runtime sets this variable itself (no secret, no default is used)."""
        return self.name in RUNTIME_VARIABLES


class Invocation(_Frozen):
    """Everything a runner needs to execute one run of one workflow version."""

    run_id: str
    owner_id: str
    service_id: str
    workflow_version: int | None
    path: str
    method: str
    body: bytes
    headers: dict[str, str]
    env: dict[str, str] = Field(description="secrets and keys: passed as environment, never argv")
    timeout: float
    max_response_size: int = Field(
        default=10 * 1024 * 1024, ge=1, description="bytes of the answer kept; more fails the run"
    )


class Outcome(_Frozen):
    """How a run ended."""

    status: Literal[RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.TIMED_OUT]
    response_status: int | None = None
    response_body: bytes | None = None
    response_content_type: str | None = None
    error: str | None = None

    @classmethod
    def from_response(cls, status: int, body: bytes, content_type: str | None) -> Outcome:
        """A workflow answered: 2xx/3xx is success, anything else fails with its ``detail``."""
        if status < 400:
            return cls(
                status=RunStatus.COMPLETED,
                response_status=status,
                response_body=body,
                response_content_type=content_type,
            )
        return cls(
            status=RunStatus.FAILED,
            response_status=status,
            response_body=body,
            response_content_type=content_type,
            error=f"workflow answered {status}: {_detail_of(body)}",
        )

    @classmethod
    def failure(cls, error: str, *, timed_out: bool = False) -> Outcome:
        return cls(status=RunStatus.TIMED_OUT if timed_out else RunStatus.FAILED, error=error)


def _detail_of(body: bytes) -> str:
    try:
        parsed = parse_json(body, what="the response")
    except ValueError:
        return body[:300].decode("utf-8", "replace")
    if isinstance(parsed, dict) and "detail" in parsed:
        return str(parsed["detail"])[:300]
    return json.dumps(parsed)[:300]
