"""The console as an aiohttp sub-application at ``/console``, plus ``/`` and ``/login``.

Its own ``on_response_prepare`` runs after the server's (aiohttp sends the signal of each app
on the match's path, outermost first), so console pages get a CSP that lets their own script
and stylesheet load, and nothing else.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from console import login, operations, runs, schedules, workflows
from console.deps import LATE, LateConsole
from console.render import SignIn, page
from console.streams import STREAMS, EventStreams
from core.errors import SwitchboardError

PREFIX = "/console"
LIVE = ("/preview", "/events", "/logs")
"""Paths a script reads (JSON, event streams): no redirect, no HTML error page."""
STATIC = Path(__file__).resolve().parent / "static"
CONSOLE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def _console_headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["Content-Security-Policy"] = CONSOLE_POLICY
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Frame-Options"] = "DENY"
    if response.content_type == "text/html":
        response.headers["Cache-Control"] = "no-store"


@web.middleware
async def _pages(request: web.Request, handler: Handler) -> web.StreamResponse:
    """No session: to the login page. A refused change: the page, saying why (not JSON)."""
    try:
        return await handler(request)
    except SignIn:
        if request.method == "GET" and not request.path.endswith(LIVE):
            raise web.HTTPSeeOther(login.back_to_login("")) from None
        raise web.HTTPUnauthorized(text="sign in again") from None
    except SwitchboardError as exc:
        if request.path.endswith(LIVE):
            raise
        return page(request, "problem.html", None, status=exc.status, problem=exc.detail)


async def _home(request: web.Request) -> web.StreamResponse:
    raise web.HTTPSeeOther(f"{PREFIX}/runs")


def console_app(late: LateConsole) -> web.Application:
    """The sub-application; ``late`` is filled by the composition root at startup."""
    app = web.Application(middlewares=[_pages])
    app[LATE] = late
    app[STREAMS] = EventStreams()
    app.on_response_prepare.append(_console_headers)
    app.on_shutdown.append(_stop_streams)
    app.router.add_routes(
        [
            web.get("/", _home),
            web.get("/login", login.login_form),
            web.post("/login", login.login_with_key),
            web.post("/logout", login.logout),
            web.get("/runs", runs.runs_page),
            web.get("/runs/events", runs.runs_events),
            web.post("/runs/bulk", runs.bulk),
            web.get("/runs/{run_id}", runs.run_page),
            web.get("/runs/{run_id}/logs", runs.run_logs),
            web.post("/runs/{run_id}/cancel", runs.cancel_run),
            web.post("/runs/{run_id}/replay", runs.replay_run),
            web.get("/triggers", operations.triggers_page),
            web.post("/triggers/action", operations.trigger_action),
            web.post("/inbox/replay", operations.replay_event),
            web.get("/workflows", workflows.workflows_page),
            web.post("/workflows", workflows.deploy),
            web.get("/workflows/{workflow_id}", workflows.workflow_page),
            web.get("/keys", operations.keys_page),
            web.post("/keys", operations.create_key),
            web.post("/keys/revoke", operations.revoke_key),
            web.get("/schedules", schedules.schedules_page),
            web.get("/schedules/preview", schedules.preview_json),
            web.get("/schedules/new", schedules.schedule_form),
            web.post("/schedules", schedules.save_schedule),
            web.get("/schedules/{schedule_id}/edit", schedules.schedule_form),
            web.post("/schedules/{schedule_id}", schedules.save_schedule),
            web.post("/schedules/{schedule_id}/{action}", schedules.schedule_action),
        ]
    )
    app.router.add_static("/static", STATIC, append_version=True, name="static")
    return app


async def _stop_streams(app: web.Application) -> None:
    app[STREAMS].stop()


async def _root(request: web.Request) -> web.StreamResponse:
    raise web.HTTPSeeOther(f"{PREFIX}/")


def mount_console(app: web.Application, late: LateConsole) -> None:
    """``/console/…``, ``/`` and ``/login`` on the server's application ``app``."""
    app[LATE] = late
    app.router.add_get("/", _root)
    app.router.add_get("/login", login.login_link)
    app.add_subapp(PREFIX, console_app(late))
