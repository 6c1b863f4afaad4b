"""Wiring the web console (``console/``) to the services: its parts, and its login links."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from console.deps import ConsoleDeps
from console.wiring import console_sessions, login_url
from dispatch.run_catalog import RunCatalogReader
from dispatch.run_control import RunController
from dispatch.workflow_catalog import WorkflowCatalog
from switchboard.services import Services

FIRST_START_LINK = timedelta(hours=24)
"""The demo's link: valid for a day, so it still works when the demo is opened later."""


def console_deps(services: Services, *, stop_local: Callable[[str], bool] | None) -> ConsoleDeps:
    """``stop_local``: stops a run this node's workers run (a cancel takes effect at once)."""
    return ConsoleDeps(
        sessions=console_sessions(services.signer, services.clock, services.settings.console),
        keys=services.keys,
        authenticator=services.auth,
        inbox=services.inbox,
        schedules=services.schedules,
        clock=services.clock,
        catalog=RunCatalogReader(services.database),
        control=RunController(
            services.database,
            services.clock,
            services.gateway,
            services.events,
            stop_local=stop_local,
        ),
        gateway=services.gateway,
        bulk_limit=services.settings.runtime.bulk_limit,
        workflows=WorkflowCatalog(
            services.database, services.registry, services.settings.server.data_dir / "uploads"
        ),
    )


async def first_start_link(services: Services) -> str:
    """The login link the first start prints under the new admin key."""
    link = await fresh_link(services, valid_for=FIRST_START_LINK)
    return link or "(no admin key)"


async def fresh_link(services: Services, *, valid_for: timedelta | None = None) -> str | None:
    """A one-time login link for the data dir's admin key (``switchboard console``)."""
    settings = services.settings
    sessions = console_sessions(services.signer, services.clock, settings.console)
    period = valid_for or timedelta(minutes=settings.console.login_link_minutes)
    return await login_url(sessions, services.keys, settings.server.base_url(), valid_for=period)
