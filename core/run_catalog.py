"""Runs as operators look them up and steer them (issue 13): the models the management API
answers and the console shows, and the two ports behind them.

:class:`RunCatalog` reads (a filtered, keyset-paged list without bodies; one run with its
timeline and delivery); :class:`RunControl` changes (cancel, replay). ``dispatch`` implements
both over its tables (``dispatch/run_catalog.py``, ``dispatch/run_control.py``); ``triggers`` and
the console use them through these ports only. ``owner_id`` ``None`` means every owner (admin).
"""

from __future__ import annotations

from typing import Any, Literal, Protocol

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from core.clock import ApiTime
from core.models import RunStatus, Source

RunSort = Literal["-created", "created", "-duration", "duration"]
"""``-created`` newest first (the default); ``duration``/``-duration``: finished runs only,
shortest/longest first."""

MAX_QUERY_LENGTH = 200


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RunFilter(_Frozen):
    """Which runs: every field narrows the set (``status`` and ``source``: any of those given)."""

    status: tuple[RunStatus, ...] = ()
    source: tuple[Source, ...] = ()
    service_id: str | None = Field(default=None, max_length=100)
    owner: str | None = Field(default=None, max_length=64, description="admin keys only")
    since: AwareDatetime | None = Field(default=None, description="created at or after")
    until: AwareDatetime | None = Field(default=None, description="created before")
    q: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_QUERY_LENGTH,
        description="text found in the run's input or output (case-sensitive on PostgreSQL)",
    )
    sort: RunSort = "-created"

    def for_owner(self, owner_id: str | None) -> RunFilter:
        """This filter held to ``owner_id``'s runs (``None``: as given)."""
        return self if owner_id is None else self.model_copy(update={"owner": owner_id})


class RunItem(_Frozen):
    """A run in a list: who, what, how it stands and how long it took; never its bodies."""

    id: str
    owner_id: str
    service_id: str
    status: RunStatus
    source: Source
    created_at: ApiTime
    started_at: ApiTime | None
    completed_at: ApiTime | None
    duration_ms: int | None = Field(description="from its last start to its end")
    attempts: int
    workflow_version: int | None
    error: str | None
    reply_channel: str | None = Field(description="where its answer goes (none: no reply)")
    replay_of: str | None = Field(description="the run this one replays")


class RunPage(_Frozen):
    runs: list[RunItem]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; null: last")


class TimelineEntry(_Frozen):
    """One step of a run: ``queued``, each ``attempt`` (a worker started it), ``completed``."""

    at: ApiTime
    kind: Literal["queued", "attempt", "completed"]
    attempt: int | None = None
    status: RunStatus | None = Field(default=None, description="completed: how it ended")
    detail: str | None = None


class DeliveryView(_Frozen):
    """The run's reply on its way to its target (DESIGN §1 step 4)."""

    channel: str
    target: dict[str, Any]
    attempts: int
    state: str = Field(description="pending, sending, sent or failed")
    last_error: str | None
    next_attempt_at: ApiTime | None
    updated_at: ApiTime


class RunDetail(_Frozen):
    """One run: the list's fields, its inputs and output, its timeline and its delivery."""

    run: RunItem
    path: str
    method: str
    correlation_id: str | None
    caller_id: str | None
    inputs: Any = Field(description="the request body, parsed when it is JSON")
    output: Any = Field(description="the workflow's answer when it is JSON")
    output_text: str | None = Field(description="the answer as text when it is not JSON")
    response_status: int | None
    reply_target: dict[str, Any] | None
    timeline: list[TimelineEntry]
    delivery: DeliveryView | None


class RunCatalog(Protocol):
    """Runs read for operators. Pages are keyset-paged: ``cursor`` is opaque, valid for the same
    filter, and stable while runs arrive (a new run never shifts a later page)."""

    async def page(self, which: RunFilter, *, limit: int, cursor: str | None) -> RunPage:
        """Up to ``limit`` runs in ``which.sort`` order; raises ``BadRequest`` for a bad cursor."""
        ...

    async def count(self, which: RunFilter) -> int:
        """How many runs ``which`` matches (what a bulk action would act on, uncapped)."""
        ...

    async def ids(self, which: RunFilter, *, limit: int) -> list[str]:
        """The ids of the first ``limit`` runs of ``which`` in its order."""
        ...

    async def detail(self, run_id: str, *, owner_id: str | None) -> RunDetail:
        """One run; ``NotFound`` when it does not exist or belongs to another owner."""
        ...


class RunControl(Protocol):
    """Runs changed by operators. Both raise ``NotFound`` for another owner's run."""

    async def cancel(self, run_id: str, *, owner_id: str | None, actor: str) -> RunItem:
        """Cancel an unfinished run: a queued one never starts; a running one is stopped (its
        worker notices, its sandbox is torn down) and sends no reply. ``Conflict`` if finished."""
        ...

    async def replay(
        self,
        run_id: str,
        *,
        owner_id: str | None,
        actor: str,
        inputs: str | None,
        version: Literal["same", "latest"],
        reply: bool,
    ) -> RunItem:
        """A new run of the same workflow and path, source ``replay``, recording ``replay_of``.

        ``inputs``: JSON text replacing the original body (``None``: the original's).
        ``version`` ``same`` pins the version the original ran (if it ran one); ``reply``
        sends the answer to the original's reply target again."""
        ...
