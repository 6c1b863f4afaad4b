"""Pages: the Jinja environment (autoescaped, templates from the package) and the signed-in
request's context (session, CSRF token, flash line)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

import jinja2
from aiohttp import web

from console.deps import LATE, ConsoleDeps
from console.sessions import COOKIE, ConsoleSession

ENVIRONMENT = jinja2.Environment(
    loader=jinja2.PackageLoader("console", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


class SignIn(Exception):
    """No valid session: the middleware sends the browser to the login page."""


@dataclass(frozen=True, slots=True)
class Signed:
    """A request with a valid session."""

    deps: ConsoleDeps
    session: ConsoleSession
    csrf: str


async def signed_in(request: web.Request) -> Signed:
    """The request's session, its key still active; else :class:`SignIn`."""
    deps = request.app[LATE]()
    session = deps.sessions.read_session(request.cookies.get(COOKIE))
    if session is None:
        raise SignIn
    active = {key.id for key in await deps.keys.list(session.owner_id) if key.revoked_at is None}
    if session.key_id not in active:
        raise SignIn
    return Signed(deps, session, deps.sessions.csrf_token(session))


async def changing(request: web.Request) -> tuple[Signed, dict[str, str]]:
    """A signed-in change: its form fields, after the CSRF check (field or header)."""
    signed = await signed_in(request)
    form = {name: str(value) for name, value in (await request.post()).items()}
    given = request.headers.get("X-CSRF-Token") or form.get("csrf")
    signed.deps.sessions.check_csrf(signed.session, given)
    return signed, form


def page(
    request: web.Request,
    template: str,
    signed: Signed | None,
    *,
    status: int = 200,
    **context: Any,
) -> web.Response:
    """``template`` rendered with the session's context around ``context``."""
    text = ENVIRONMENT.get_template(template).render(
        signed=signed,
        csrf=signed.csrf if signed else "",
        flash=request.query.get("done", ""),
        path=request.path,
        static=lambda name: str(request.app.router["static"].url_for(filename=name)),
        **context,
    )
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8")


def back(location: str, done: str = "") -> web.HTTPSeeOther:
    """Post/redirect/get: back to ``location`` with a line saying what was done (raise it)."""
    return web.HTTPSeeOther(done_at(location, done))


def done_at(location: str, done: str) -> str:
    """``location`` with the line saying what was done (shown by the page)."""
    if done:
        location += ("&" if "?" in location else "?") + "done=" + _quote(done)
    return location


def see_other(location: str) -> web.Response:
    """A 303 to ``location`` returned, not raised, so that it can set or clear cookies
    (aiohttp deprecates returning an exception)."""
    return web.Response(status=303, headers={"Location": location})


def _quote(text: str) -> str:
    return quote(text, safe="")


def when(moment: datetime | None, zone: str = "UTC") -> str:
    """A time for a table cell in ``zone``; the script adds the viewer's zone."""
    if moment is None:
        return "—"
    local = moment.astimezone(ZoneInfo(zone))
    return local.strftime("%Y-%m-%d %H:%M:%S ") + (local.tzname() or zone)


def iso(moment: datetime | None) -> str:
    return "" if moment is None else moment.astimezone(UTC).isoformat()


def pretty_json(value: object) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=str)


ENVIRONMENT.filters["when"] = when
ENVIRONMENT.filters["iso"] = iso
ENVIRONMENT.filters["pretty_json"] = pretty_json
