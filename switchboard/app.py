"""The aiohttp application: routes, and every resource in a ``cleanup_ctx`` (reverse teardown)."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Collection
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from core.settings import Settings
from dispatch.workers import WorkerPool, WorkerSettings
from switchboard.demo import ensure_admin_key, register_examples
from switchboard.http import error_middleware
from switchboard.metrics import PrometheusMetrics
from switchboard.sandboxing import ChosenRunner, open_runner
from switchboard.services import Services, open_services
from triggers.api import ROUTES, ApiSettings, RuntimeApi
from triggers.files import FILE_ROUTES, FileRoutes

logger = logging.getLogger(__name__)

SETTINGS = web.AppKey("settings", Settings)
METRICS = web.AppKey("metrics", PrometheusMetrics)
SERVICES = web.AppKey("services", Services)
WORKERS = web.AppKey("workers", WorkerPool)
API = web.AppKey("api", RuntimeApi)
FILE_HANDLERS = web.AppKey("file_handlers", FileRoutes)
READY = web.AppKey("ready", asyncio.Event)
STARTUP_ERROR = web.AppKey("startup_error", list)
RUNNER = web.AppKey("runner", ChosenRunner)

ROLES = frozenset({"web", "worker"})


def create_app(
    settings: Settings,
    *,
    roles: Collection[str] = ROLES,
    on_admin_key: Callable[[str], None] | None = None,
) -> web.Application:
    """The whole service for ``roles``: ``web`` serves the API, ``worker`` executes runs."""
    unknown = set(roles) - ROLES
    if unknown:
        raise ValueError(f"unknown roles {sorted(unknown)}; choose from {sorted(ROLES)}")
    metrics = PrometheusMetrics()
    app = web.Application(
        client_max_size=settings.server.max_body_size, middlewares=[error_middleware(metrics)]
    )
    app[SETTINGS] = settings
    app[METRICS] = metrics
    app[READY] = asyncio.Event()
    app[STARTUP_ERROR] = []
    app.cleanup_ctx.append(_services)
    if "worker" in roles:
        app.cleanup_ctx.append(_workers)
    app.cleanup_ctx.append(_bootstrap(on_admin_key))
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_endpoint)
    if "web" in roles:
        for method, path, name in ROUTES:
            app.router.add_route(method, path, _route_to(API, name))
        for method, path, name in FILE_ROUTES:
            app.router.add_route(method, path, _route_to(FILE_HANDLERS, name))
    return app


async def _services(app: web.Application) -> AsyncIterator[None]:
    async with open_services(app[SETTINGS], metrics=app[METRICS]) as services:
        app[SERVICES] = services
        app[API] = RuntimeApi(
            services.gateway,
            services.auth,
            services.files,
            ApiSettings(sync_timeout=services.settings.runtime.sync_timeout),
        )
        app[FILE_HANDLERS] = FileRoutes(services.files)
        yield


async def _workers(app: web.Application) -> AsyncIterator[None]:
    async with open_runner(app[SERVICES]) as chosen:
        app[RUNNER] = chosen
        async for _ in _worker_pool(app, chosen):
            yield


async def _worker_pool(app: web.Application, chosen: ChosenRunner) -> AsyncIterator[None]:
    services = app[SERVICES]
    settings = services.settings
    pool = WorkerPool(
        WorkerSettings(
            worker_id=f"node-{uuid.uuid4().hex[:12]}",
            concurrency=settings.runtime.workers,
            run_timeout=settings.runtime.run_timeout,
            lease_seconds=settings.runtime.lease_seconds,
            poll_interval=settings.runtime.poll_interval,
            runtime_url=settings.server.base_url(),
            workflow_log_level=settings.runtime.workflow_log_level,
            shutdown_grace=settings.runtime.shutdown_grace,
        ),
        queue=services.queue,
        registry=services.registry,
        runner=chosen.runner,
        builtins=services.builtins,
        logs=services.logs,
        events=services.events,
        signer=services.signer,
        clock=services.clock,
        metrics=services.metrics,
        replies=services.replies,
        on_reply=services.outbox.wake,
    )
    pool.start()
    services.outbox.start()
    app[WORKERS] = pool
    yield
    await pool.aclose()
    await services.outbox.aclose()


def _bootstrap(
    on_admin_key: Callable[[str], None] | None,
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def bootstrap(app: web.Application) -> AsyncIterator[None]:
        services = app[SERVICES]
        key = await ensure_admin_key(services)
        if key is not None and on_admin_key is not None:
            on_admin_key(key)
        task: asyncio.Task[None] | None = None
        if services.settings.runtime.register_examples:
            task = asyncio.create_task(_register(app), name="register-examples")
        else:
            app[READY].set()
        yield
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    return bootstrap


async def _register(app: web.Application) -> None:
    try:
        registered = await register_examples(app[SERVICES])
        if registered:
            logger.info("example workflows registered: %s", ", ".join(registered))
    except Exception as exc:
        logger.exception("registering the example workflows failed")
        app[STARTUP_ERROR].append(f"registering the example workflows failed: {exc}")
    app[READY].set()


def _route_to(key: web.AppKey[Any], name: str) -> Handler:
    """A handler that calls method ``name`` of the object the services context put at ``key``."""

    async def handler(request: web.Request) -> web.StreamResponse:
        result: web.StreamResponse = await getattr(request.app[key], name)(request)
        return result

    handler.__name__ = name
    return handler


async def metrics_endpoint(request: web.Request) -> web.Response:
    """Prometheus text format: runs accepted, requests rejected, run durations, queue depth."""
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
    workers = app.get(WORKERS)
    if workers is not None:
        body["workers"] = {"active": workers.active_count, "limit": app[SETTINGS].runtime.workers}
    return web.json_response(body, status=200 if ready else 503)
