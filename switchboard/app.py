"""The aiohttp application: routes, and one ``cleanup_ctx`` that starts every component.

Each component (``core.channels.Component``) registers its own teardown on the one exit stack,
so a role is a list of starts in dependency order (:func:`_start_worker`, :func:`_start_scheduler`)
and shutdown runs them backwards: the scheduler and the workers stop, then the channels' intake,
then the group commits, then the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import importlib.metadata
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from typing import Any

from aiohttp import web

from console.app import mount_console
from console.deps import LateConsole
from core.channels import Channel
from core.errors import Unauthorized
from core.inbox import InboxAdmin
from core.models import CallerRights
from core.redaction import InFlightSecrets
from dispatch.inbox_processor import InboxProcessor
from dispatch.inbox_queue import InboxQueue
from dispatch.intake import IntakeWriter
from dispatch.logs import LogWriter
from dispatch.retention import Retention
from dispatch.run_catalog import RunCatalogReader
from dispatch.run_control import RunController
from dispatch.workers import WorkerPool
from dispatch.workflow_catalog import WorkflowCatalog
from scheduler.node import SchedulerNode, scheduler_node
from scheduler.rest import ScheduleRoutes
from switchboard.channels import (
    LateParts,
    configured_channels,
    configured_triggers,
    run_started_to,
)
from switchboard.console import console_deps, first_start_link
from switchboard.demo import ensure_admin_key, register_examples
from switchboard.headers import set_security_headers
from switchboard.http import body_deadline_middleware, error_middleware
from switchboard.logging import redact_server_logs
from switchboard.metrics import PrometheusMetrics
from switchboard.sandboxing import ConfiguredRunner
from switchboard.services import Services, start_services
from switchboard.settings import Settings
from triggers.api import RuntimeApi
from triggers.files import FileRoutes
from triggers.inbox_api import InboxRoutes
from triggers.manage_api import ManagementRoutes
from triggers.openapi import OpenApiRoute
from triggers.runs_api import RunRoutes
from triggers.secrets_api import SecretRoutes

logger = logging.getLogger(__name__)

SETTINGS = web.AppKey("settings", Settings)
METRICS = web.AppKey("metrics", PrometheusMetrics)
SERVICES = web.AppKey("services", Services)
WORKERS = web.AppKey("workers", WorkerPool)
API = web.AppKey("api", RuntimeApi)
CHANNELS: web.AppKey[Sequence[Channel]] = web.AppKey("channels")
PARTS = web.AppKey("channel_parts", LateParts)
READY = web.AppKey("ready", asyncio.Event)
STARTUP_ERROR = web.AppKey("startup_error", list)
SCHEDULER = web.AppKey("scheduler", SchedulerNode)
RUNNER = web.AppKey("runner", ConfiguredRunner)

ROLES = frozenset({"web", "worker", "scheduler"})


def create_app(
    settings: Settings,
    *,
    roles: Collection[str] = ROLES,
    on_admin_key: Callable[[str], None] | None = None,
    on_console_link: Callable[[str], None] | None = None,
) -> web.Application:
    """The whole service for ``roles``: ``web`` serves the API, ``worker`` executes runs,
    ``scheduler`` fires schedules (one leader per database, the other nodes stand by)."""
    unknown = set(roles) - ROLES
    if unknown:
        raise ValueError(f"unknown roles {sorted(unknown)}; choose from {sorted(ROLES)}")
    metrics = PrometheusMetrics()
    app = web.Application(
        client_max_size=settings.server.max_body_size,
        middlewares=[
            error_middleware(metrics),
            body_deadline_middleware(settings.server.body_timeout),
        ],
    )
    app.on_response_prepare.append(set_security_headers)
    app[SETTINGS] = settings
    app[METRICS] = metrics
    app[READY] = asyncio.Event()
    app[STARTUP_ERROR] = []
    app[PARTS] = LateParts()
    app[CHANNELS] = configured_channels(settings, app[PARTS], roles=roles)
    late = LateConsole()
    app.cleanup_ctx.append(_components(roles, on_admin_key, on_console_link, late))
    app.on_shutdown.append(_stop_log_streams)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_endpoint)
    if "web" in roles:
        for channel in app[CHANNELS]:
            edge = channel.edge()
            if isinstance(edge, web.Application):
                app.add_subapp(channel.prefix, edge)
        mount_console(app, late)
    return app


def inbox_admin(services: Services) -> InboxAdmin:
    """The durable inbox as operators drive it (the CLI's triggers and inbox commands).

    No channel starts in a CLI command, so none registers its triggers: the names come from the
    settings instead (without them, ``triggers list`` showed nothing and ``triggers suspend
    whatsapp`` answered "not found" next to a server serving WhatsApp)."""
    inbox = services.inbox
    for trigger in configured_triggers(services.settings):
        if trigger not in inbox.trigger_names:
            inbox.register(trigger)
    return inbox


def _components(
    roles: Collection[str],
    on_admin_key: Callable[[str], None] | None,
    on_console_link: Callable[[str], None] | None,
    console: LateConsole,
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def components(app: web.Application) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            services = await start_services(
                app[SETTINGS],
                stack,
                metrics=app[METRICS],
                channels=app[CHANNELS],
                parts=app[PARTS],
            )
            app[SERVICES] = services
            if "worker" in roles:
                await _start_worker(app, services, stack)
            if "scheduler" in roles:
                await _start_scheduler(app, services, stack)
            await _bootstrap(app, services, stack, on_admin_key, on_console_link)
            if "web" in roles:
                _add_api_routes(app, services)
                workers = app.get(WORKERS)
                console.deps = console_deps(
                    services, stop_local=workers.stop if workers is not None else None
                )
            yield

    return components


def _add_api_routes(app: web.Application, services: Services) -> None:
    """The HTTP API's routes (runtime, files, schedules, secrets, triggers and inbox),
    registered as bound methods of the handler objects made from the services. aiohttp freezes
    the router only after startup (``AppRunner``: ``startup()``, then ``freeze()``) and serves
    nothing before it finishes, so routes added now are served like those added in
    :func:`create_app`."""

    async def schedule_owner(request: web.Request) -> tuple[str, CallerRights]:
        principal = await services.auth.authenticate(request.headers.get("Authorization"))
        services.auth.refuse_one_time(principal, "schedules")
        return principal.owner_id, principal.rights

    runtime = services.settings.runtime
    app[API] = RuntimeApi(
        services.gateway,
        services.auth,
        services.files,
        sync_timeout=runtime.sync_timeout,
        logs_max_seconds=runtime.logs_max_seconds,
    )
    for routes in (
        app[API].route_table(),
        FileRoutes(services.files).route_table(),
        ScheduleRoutes(services.schedules, schedule_owner).route_table(),
        ScheduleRoutes(services.schedules, schedule_owner).route_table("/api/v1"),
        SecretRoutes(services.secrets, services.auth).route_table(),
        InboxRoutes(services.inbox, services.auth).route_table(),
        management_routes(app, services),
        OpenApiRoute(title="Switchboard", version=_version()).route_table(),
    ):
        app.router.add_routes(routes)


def management_routes(app: web.Application, services: Services) -> list[web.RouteDef]:
    """``/api/v1/runs``, ``workflows`` and ``keys`` (issue 13); a cancel stops the run at once
    when it runs on this node."""
    workers = app.get(WORKERS)
    control = RunController(
        services.database,
        services.clock,
        services.gateway,
        services.events,
        stop_local=workers.stop if workers is not None else None,
    )
    workflows = WorkflowCatalog(
        services.database, services.registry, services.settings.server.data_dir / "uploads"
    )
    return [
        *RunRoutes(
            RunCatalogReader(services.database),
            control,
            services.auth,
            bulk_limit=services.settings.runtime.bulk_limit,
        ).route_table(),
        *ManagementRoutes(workflows, services.keys, services.auth).route_table(),
    ]


def _version() -> str:
    try:
        return importlib.metadata.version("switchboard")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout, not installed
        return "0"


async def _stop_log_streams(app: web.Application) -> None:
    """Before the server waits for open requests: /logs streams end now, not after 60 s."""
    api = app.get(API)
    if api is not None:
        api.stop_log_streams()


async def _start_worker(
    app: web.Application, services: Services, stack: contextlib.AsyncExitStack
) -> None:
    """A worker node: the runner, the outbox, the workers, the inbox processor, retention."""
    settings = services.settings
    runner = ConfiguredRunner(services)
    await runner.start(stack)
    app[RUNNER] = runner
    in_flight = InFlightSecrets()  # this node's runs' secret values, redacted from its logs
    stack.callback(redact_server_logs(in_flight))
    logs = LogWriter(services.database, services.clock, services.events)
    await logs.start(stack)
    await services.outbox.start(stack)  # after the workers stop: their last replies go out
    pool_owner = f"node-{uuid.uuid4().hex[:12]}"
    pool = WorkerPool(
        settings.runtime,
        worker_id=pool_owner,
        runtime_url=settings.server.base_url(),
        queue=services.queue,
        registry=services.registry,
        runner=runner.runner,
        builtins=services.builtins,
        logs=logs,
        events=services.events,
        signer=services.signer,
        clock=services.clock,
        metrics=services.metrics,
        replies=services.replies,
        secrets=services.secrets,
        in_flight=in_flight,
        on_reply=services.outbox.wake,
        on_started=run_started_to(services.channels),
    )
    await pool.start(stack)
    app[WORKERS] = pool
    services.gateway.serve_locally(pool)
    stack.callback(services.gateway.serve_locally, None)
    await inbox_processor(services, owner=pool_owner).start(stack)
    settings = services.settings
    await Retention(services.database, services.clock, settings.runtime, settings.inbox).start(
        stack
    )


def inbox_processor(services: Services, *, owner: str) -> InboxProcessor:
    """The inbox processor of a worker node, fed the configured channels' processors."""
    settings = services.settings.inbox
    return InboxProcessor(
        settings,
        owner,
        InboxQueue(
            services.database,
            services.clock,
            IntakeWriter(services.database, services.clock),  # run requests only, no events
            lease_seconds=settings.lease_seconds,
            max_attempts=settings.max_attempts,
            retry_delay=settings.retry_delay,
            retry_delay_max=settings.retry_delay_max,
        ),
        {
            trigger: processor
            for channel in services.channels
            for trigger, processor in channel.processors.items()
        },
        wake=services.inbox.work_available,
        clock=services.clock,
        run_events=services.events,
        metrics=services.metrics,
        on_finished=services.inbox.finished.notify,
    )


async def _start_scheduler(
    app: web.Application, services: Services, stack: contextlib.AsyncExitStack
) -> None:
    """``[[schedules]]`` of the config applied, then this node stands by or leads."""
    settings = services.settings
    await services.schedules.apply_config(settings.scheduler.owner, settings.schedules)
    node = scheduler_node(
        services.database, services.schedules, services.gateway, services.clock, settings.scheduler
    )
    await node.start(stack)
    app[SCHEDULER] = node


async def _bootstrap(
    app: web.Application,
    services: Services,
    stack: contextlib.AsyncExitStack,
    on_admin_key: Callable[[str], None] | None,
    on_console_link: Callable[[str], None] | None,
) -> None:
    """The demo's first admin key and console link, then the example workflows, registered in
    the background."""
    key = await ensure_admin_key(services)
    if key is not None and on_admin_key is not None:
        on_admin_key(key)
    if key is not None and on_console_link is not None:
        on_console_link(await first_start_link(services))
    if not services.settings.runtime.register_examples:
        app[READY].set()
        return
    task = asyncio.create_task(_register(app), name="register-examples")

    async def cancel() -> None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    stack.push_async_callback(cancel)


async def _register(app: web.Application) -> None:
    try:
        registered = await register_examples(app[SERVICES])
        if registered:
            logger.info("example workflows registered: %s", ", ".join(registered))
    except Exception as exc:
        logger.exception("registering the example workflows failed")
        app[STARTUP_ERROR].append(f"registering the example workflows failed: {exc}")
    app[READY].set()


async def metrics_endpoint(request: web.Request) -> web.Response:
    """Prometheus text format: runs accepted, requests rejected, run durations, queue depth.
    Behind ``Authorization: Bearer <server.metrics_key>`` when that is set."""
    key = request.app[SETTINGS].server.metrics_key
    if key is not None:
        given = request.headers.get("Authorization", "").encode("utf-8", "replace")
        expected = f"Bearer {key.get_secret_value()}".encode()
        if not hmac.compare_digest(given, expected):
            raise Unauthorized("/metrics needs Authorization: Bearer <server.metrics_key>")
    return await request.app[METRICS].render(request.app[SERVICES].queue)


async def healthz(request: web.Request) -> web.Response:
    app = request.app
    errors = app[STARTUP_ERROR]
    ready = app[READY].is_set() and not errors
    body: dict[str, Any] = {
        "status": "ok" if ready else ("error" if errors else "starting"),
        "sandbox": app[SETTINGS].runtime.sandbox,
    }
    chosen = app.get(RUNNER)
    if chosen is not None:  # a worker node: the mode it really runs in
        body["sandbox"] = chosen.mode
        if chosen.problem is not None:
            body["sandbox_problem"] = chosen.problem
        if chosen.zygotes is not None:
            body["zygotes"] = len(chosen.zygotes)
        if chosen.warm is not None:
            body["warm"] = len(chosen.warm)
    if errors:
        body["errors"] = errors
    services = app.get(SERVICES)
    if services is not None:
        body["database"] = services.database.dialect
        try:
            body["queue"] = await services.queue.counts()
        except Exception as exc:
            body["status"] = "error"
            body["errors"] = [*errors, f"database unreachable: {type(exc).__name__}"]
            ready = False
    node = app.get(SCHEDULER)
    if node is not None:
        body["scheduler"] = "leader" if node.leading.is_set() else "standby"
    workers = app.get(WORKERS)
    if workers is not None:
        body["workers"] = {"active": workers.active_count, "limit": app[SETTINGS].runtime.workers}
    return web.json_response(body, status=200 if ready else 503)
