"""Ports: the only way the packages of the middle ring meet (DESIGN §3).

``triggers`` and ``scheduler`` talk to the queue through :class:`RunGateway`; ``dispatch`` executes
workflows through :class:`WorkflowRunner` and built-in services through :class:`BuiltinService`.
The composition root wires the implementations.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncConnection

from core.models import (
    Invocation,
    LogEntry,
    Outcome,
    RunRecord,
    RunRequest,
    RunSummary,
    Source,
    SubmittedRun,
    WorkflowLimits,
)
from core.replies import Delivery, SendResult
from core.secret_records import SecretEvent, SecretInfo

LogSink = Callable[[str, str], None]
"""Receives ``(stream, line)`` for every line a run writes; must not block."""


class RunGateway(Protocol):
    """The durable run queue as seen from an intake.

    ``submit`` returns only after the run request is committed: an intake acknowledges its source
    after ``submit`` returns and never before. Submitting a request whose ``idempotency_key`` was
    seen before returns the run that key already made (``created`` false).
    """

    async def submit(self, request: RunRequest, *, waited: bool = False) -> SubmittedRun:
        """``waited``: the caller waits for the run's end on this node (a synchronous
        ``/run``); the queue may then start it at once, without a claim of its own."""
        ...

    async def provision(
        self, owner_id: str, caller_id: str | None, run_id: str | None = None
    ) -> str:
        """Create an empty ("husk") run that a later submit with ``provisioned_run_id`` fills."""
        ...

    async def get(self, run_id: str) -> RunRecord | None: ...

    async def wait_until_finished(self, run_id: str, timeout: float) -> RunRecord | None:
        """The run once finished, or as it stands when ``timeout`` seconds have passed."""
        ...

    def follow_logs(
        self, run_id: str, *, after_time: datetime | None = None, follow: bool = True
    ) -> AsyncIterator[list[LogEntry]]:
        """Batches of the run's log lines (strictly after ``after_time``) in order.

        With ``follow`` the iterator ends only once the run has finished and every line it wrote
        has been yielded; without, once the lines stored so far have been.
        """
        ...

    async def has_service(self, service_id: str) -> bool:
        """Whether ``service_id`` names a registered workflow or a built-in service."""
        ...


class RunHistory(Protocol):
    """Runs looked up by what made them, for packages that do not own the runs (the scheduler)."""

    async def runs_by_key_prefix(self, owner_id: str, prefix: str, limit: int) -> list[RunSummary]:
        """``owner_id``'s runs whose idempotency key starts with ``prefix``, newest first."""
        ...


class RunStates(Protocol):
    """Whether a run still runs, for packages that do not own the runs (a run key lives while
    its run runs: ``triggers.auth``)."""

    async def is_running(self, run_id: str, owner_id: str) -> bool:
        """Whether ``owner_id``'s run ``run_id`` exists and has not finished."""
        ...


class ChatActivity(Protocol):
    """When a conversation last made a run, for channels that do not own the runs (WhatsApp's
    24-hour window: the run is written with its message's processing, PROTOCOLS §2.4)."""

    async def last_run_at(self, serial_key: str, source: Source) -> datetime | None:
        """When the newest run ``source`` made under ``serial_key`` was created, if any."""
        ...


class DeliveryFailures(Protocol):
    """Marks a sent delivery failed when the provider reports it later (WhatsApp's status
    callbacks), for channels that do not own the deliveries. It joins the caller's transaction,
    so the channel's own record of the report and the delivery's failure commit together."""

    async def mark_failed(self, conn: AsyncConnection, delivery_id: int, error: str) -> None:
        """Delivery ``delivery_id`` is ``failed`` with ``error`` as its last error."""
        ...


class WorkflowRunner(Protocol):
    """Executes one run of a user workflow and reports how it ended.

    The runner owns the workflow's process from start to end: when ``run`` returns or is
    cancelled, nothing of the run is left running. The one exception is opt-in warm reuse
    (``workflow.limits.warm``, ``dispatch/warm.py``): after a completed run the process may be
    kept, idle, for the next run of the same version and owner, until the runner tears it down
    (idle TTL, shutdown); a run that did not complete never leaves its process behind. Lines
    the workflow prints while serving a run go to that run's ``on_log``.
    A run that exceeds ``invocation.timeout`` ends with status ``timed_out``; a runner that
    enforces ``workflow.limits`` ends a run that breaks one with an error naming it.
    """

    async def run(
        self, invocation: Invocation, workflow: ResolvedWorkflow, on_log: LogSink
    ) -> Outcome: ...


class ResolvedWorkflow(Protocol):
    """A workflow version ready to run: its source file and its built environment."""

    @property
    def service_id(self) -> str: ...

    @property
    def version(self) -> int: ...

    @property
    def source_path(self) -> Path: ...

    @property
    def python(self) -> Path: ...

    @property
    def limits(self) -> WorkflowLimits:
        """The runtime's defaults with the workflow's own ``[tool.switchboard]`` on top."""
        ...


BuiltinService = Callable[[Invocation, LogSink], Awaitable[Outcome]]
"""A service that runs inside the server process (``echo``, later ``send_email``…)."""


class Sender(Protocol):
    """Sends replies to one channel (Slack, WhatsApp, email, webhook).

    ``send`` makes one attempt and says how it went; it raises only for bugs. Retries, backoff
    and giving up belong to the outbox: a sender answers ``retry`` (with ``retry_after`` when the
    provider said how long to wait, e.g. HTTP 429 ``Retry-After``) or ``failed`` for errors that
    no retry can fix. A multi-part reply reports the parts sent so far in ``progress`` and resumes
    after ``delivery.progress`` on the next attempt.
    """

    async def send(self, delivery: Delivery) -> SendResult: ...


@dataclass(frozen=True, slots=True)
class OwnMessage:
    """A message a run sends itself (``send_email``): its one delivery, to ``target``."""

    run_id: str
    owner_id: str
    service_id: str
    target: Mapping[str, Any]
    """A :class:`core.models.ReplyTarget` dump; its ``channel`` picks the sender."""
    text: str
    attachments: Sequence[str] = ()
    per_hour: int = 0
    """At most this many such messages per owner and service in an hour (0: no limit)."""


class Queueing(StrEnum):
    QUEUED = "queued"
    ALREADY_QUEUED = "already_queued"
    """The run was executed again (its worker died): its message was queued the first time."""
    HAS_REPLY_TARGET = "has_reply_target"
    """The run's own answer is delivered: it has no second delivery to give."""
    RATE_LIMITED = "rate_limited"


@dataclass(frozen=True, slots=True)
class Queued:
    outcome: Queueing
    retry_after: int | None = None
    """Seconds until the owner may queue another (``RATE_LIMITED``)."""


class MessageQueue(Protocol):
    """The delivery outbox as a built-in puts a run's own message in it: ``dispatch`` owns the
    deliveries, so a channel's built-in writes none of its rows itself (issue 12)."""

    async def queue(self, message: OwnMessage) -> Queued: ...


class Metrics(Protocol):
    """What the service counts (exported by the composition root at ``/metrics``)."""

    def run_accepted(self, source: str) -> None:
        """A run request was committed (one per event, after dedupe)."""
        ...

    def request_rejected(self, status: int) -> None:
        """An intake request was refused (4xx) or failed (5xx)."""
        ...

    def run_finished(self, status: str, seconds: float) -> None:
        """A run ended with ``status`` after ``seconds`` of execution."""
        ...

    def delivery_finished(self, channel: str, outcome: str) -> None:
        """A delivery attempt ended: ``sent``, ``retry`` or ``failed``."""
        ...


class NullMetrics:
    """Counts nothing: for the CLI and tests that do not look at metrics."""

    def run_accepted(self, source: str) -> None:
        pass

    def request_rejected(self, status: int) -> None:
        pass

    def run_finished(self, status: str, seconds: float) -> None:
        pass

    def delivery_finished(self, channel: str, outcome: str) -> None:
        pass


class SecretValues(Protocol):
    """Where a run's declared secrets come from (issue 14). Values are plain text in memory only;
    an implementation never logs them."""

    async def values_for_run(
        self, owner_id: str, workflow_id: str, names: Collection[str]
    ) -> Mapping[str, str]:
        """The values of ``names`` for this owner: a value scoped to ``workflow_id`` wins over the
        owner-wide one; a name without a value is absent from the result (never an empty string).
        Raises ``SecretsUnreadable`` (core/errors.py) when stored values cannot be decrypted (e.g. a
        lost or wrong master key), never returns garbage."""
        ...


class SecretsManager(SecretValues, Protocol):
    """The secret store as the management surfaces see it (REST, ``manage_user_secrets``, CLI).

    ``workflow_id`` ``None`` is the owner-wide value. ``actor`` (a key id, a run id, ``cli``) is
    written to the audit trail with every change; values never are. Names and values are checked
    here (``core.secret_records``): a bad one raises ``BadRequest`` naming the problem.
    """

    async def put(
        self, owner_id: str, name: str, value: str, *, workflow_id: str | None, actor: str
    ) -> SecretInfo:
        """Store (or replace) a value; raises ``NotFound`` for a workflow that does not exist."""
        ...

    async def remove(
        self, owner_id: str, name: str, *, workflow_id: str | None, actor: str
    ) -> None:
        """Delete a value; raises ``NotFound`` when there is none in that scope."""
        ...

    async def list_secrets(self, owner_id: str | None) -> list[SecretInfo]:
        """Names, scopes and times (never values) of one owner, or of every owner (``None``)."""
        ...

    async def get(self, owner_id: str, name: str, *, workflow_id: str | None) -> str | None:
        """The value a run of ``workflow_id`` would get (workflow-scoped first), else ``None``."""
        ...

    async def audit(self, owner_id: str | None, *, limit: int) -> list[SecretEvent]:
        """The newest changes first: who set, deleted or re-keyed what, when."""
        ...

    async def declared_by_run(self, run_id: str, owner_id: str) -> tuple[str, frozenset[str]]:
        """The service id of ``owner_id``'s running run ``run_id`` and the names its workflow
        version declares (``[tool.env-checker] env_vars``); raises ``NotFound`` otherwise."""
        ...
