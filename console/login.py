"""Signing in (a pasted key, or a login link) and out.

The login link's token is in a URL only until it is spent: ``/login?token=…`` answers a
redirect to the console, so the address bar and history keep no secret. The pasted-key form is
protected by a double-submit token (no session exists yet to bind one to).
"""

from __future__ import annotations

import hmac
import secrets
from urllib.parse import urlencode

from aiohttp import web

from console.deps import LATE, ConsoleDeps
from console.render import changing, done_at, page, see_other
from console.sessions import COOKIE
from core.errors import SwitchboardError, Unauthorized

LOGIN_FORM_COOKIE = "switchboard_console_login"


def _set_session(request: web.Request, response: web.StreamResponse, value: str, age: int) -> None:
    response.set_cookie(
        COOKIE,
        value,
        max_age=age,
        path="/",
        httponly=True,
        samesite="Strict",
        secure=request.secure,
    )


async def _key_session(deps: ConsoleDeps, key_id: str) -> tuple[str, int]:
    for key in await deps.keys.list():
        if key.id == key_id and key.revoked_at is None and not key.one_time:
            return deps.sessions.new_session(key.id, key.owner_id, key.role)
    raise Unauthorized("the key this login link signs in as is revoked")


async def login_link(request: web.Request) -> web.StreamResponse:
    """``GET /login?token=…`` (the demo's and ``switchboard console``'s link)."""
    token = request.query.get("token")
    if not token:
        raise web.HTTPSeeOther("/console/login")
    deps = request.app[LATE]()
    try:
        value, age = await _key_session(deps, deps.sessions.redeem_login_token(token))
    except Unauthorized as exc:
        raise web.HTTPSeeOther(back_to_login(exc.detail)) from exc
    response = see_other("/console/")
    _set_session(request, response, value, age)
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


def back_to_login(problem: str) -> str:
    if not problem:
        return "/console/login"
    return "/console/login?" + urlencode({"problem": problem})


async def login_form(request: web.Request) -> web.StreamResponse:
    form_token = secrets.token_urlsafe(16)
    response = page(
        request,
        "login.html",
        None,
        form_token=form_token,
        problem=request.query.get("problem", ""),
    )
    response.set_cookie(
        LOGIN_FORM_COOKIE,
        form_token,
        path="/console/login",
        httponly=True,
        samesite="Strict",
        secure=request.secure,
    )
    return response


async def login_with_key(request: web.Request) -> web.StreamResponse:
    """``POST /console/login`` with a pasted reusable key."""
    form = await request.post()
    given, expected = str(form.get("form_token", "")), request.cookies.get(LOGIN_FORM_COOKIE, "")
    if not expected or not hmac.compare_digest(given.encode(), expected.encode()):
        raise web.HTTPSeeOther(back_to_login("the form expired; try again"))
    deps = request.app[LATE]()
    key = str(form.get("key", "")).strip()
    try:
        principal = await deps.authenticator.authenticate(f"Bearer {key}")
        if principal.one_time or principal.key_id is None:
            raise Unauthorized("sign in with a reusable key, not a one-time or run key")
    except SwitchboardError as exc:
        raise web.HTTPSeeOther(back_to_login(exc.detail)) from exc
    value, age = deps.sessions.new_session(principal.key_id, principal.owner_id, principal.role)
    response = see_other("/console/")
    _set_session(request, response, value, age)
    response.del_cookie(LOGIN_FORM_COOKIE, path="/console/login")
    return response


async def logout(request: web.Request) -> web.StreamResponse:
    await changing(request)
    response = see_other(done_at("/console/login", "signed out"))
    response.del_cookie(COOKIE, path="/")
    return response
