"""What the console is built from, handed over by the composition root once the services run."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from console.sessions import Sessions
from core.clock import Clock
from core.inbox import InboxAdmin
from core.ports import RunGateway
from core.run_catalog import RunCatalog, RunControl
from core.workflow_catalog import WorkflowAdmin
from scheduler.service import ScheduleService
from triggers.auth import Authenticator, KeyStore


@dataclass(frozen=True, slots=True)
class ConsoleDeps:
    sessions: Sessions
    keys: KeyStore
    authenticator: Authenticator
    inbox: InboxAdmin
    schedules: ScheduleService
    clock: Clock
    catalog: RunCatalog
    control: RunControl
    gateway: RunGateway
    bulk_limit: int
    workflows: WorkflowAdmin


@dataclass(slots=True)
class LateConsole:
    """The console's parts, filled at startup: its routes are mounted before services exist."""

    deps: ConsoleDeps | None = None

    def __call__(self) -> ConsoleDeps:
        if self.deps is None:
            raise web.HTTPServiceUnavailable(text="the console is starting")
        return self.deps


LATE = web.AppKey("console_late", LateConsole)
