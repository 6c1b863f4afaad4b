"""The Triggers page (health, suspend / resume / discard, recent inbox events with Replay) and
the Keys page (create, revoke). Thin: each handler calls one port and renders or redirects."""

from __future__ import annotations

from aiohttp import web

from console.render import Signed, back, changing, page, signed_in
from core.errors import BadRequest, Forbidden, NotFound, SwitchboardError
from triggers.auth import KeyRole

RECENT_EVENTS = 30
TRIGGER_ACTIONS = ("suspend", "resume", "discard")


def admin_only(signed: Signed, what: str) -> None:
    if not signed.session.is_admin:
        raise Forbidden(f"{what} needs an admin key")


async def triggers_page(request: web.Request) -> web.Response:
    signed = await signed_in(request)
    if not signed.session.is_admin:
        return page(request, "forbidden.html", signed, status=403, what="The triggers page")
    inbox = signed.deps.inbox
    trigger = request.query.get("trigger") or None
    events, _ = await inbox.events(
        trigger=trigger, status=None, limit=RECENT_EVENTS, cursor=None, include_body=False
    )
    return page(
        request,
        "triggers.html",
        signed,
        triggers=await inbox.triggers(),
        events=events,
        trigger=trigger or "",
    )


async def trigger_action(request: web.Request) -> web.StreamResponse:
    signed, form = await changing(request)
    admin_only(signed, "changing a trigger")
    name, action = form.get("name", ""), form.get("action", "")
    if action not in TRIGGER_ACTIONS:
        raise BadRequest(f"action: one of {', '.join(TRIGGER_ACTIONS)}")
    inbox = signed.deps.inbox
    if action == "suspend":
        await inbox.suspend(name)
        done = f"{name} suspended: new events are kept, not processed"
    elif action == "resume":
        await inbox.resume(name)
        done = f"{name} resumed"
    else:
        done = f"{name}: {await inbox.discard(name)} held events discarded"
    raise back("/console/triggers", done)


async def replay_event(request: web.Request) -> web.StreamResponse:
    signed, form = await changing(request)
    admin_only(signed, "replaying an inbox event")
    event_id = form.get("event_id", "")
    runs = await signed.deps.inbox.replay(event_id)
    made = ", ".join(runs) if runs else "no run"
    raise back("/console/triggers", f"event {event_id} replayed: {made}")


async def keys_page(request: web.Request) -> web.Response:
    signed = await signed_in(request)
    return await _keys(request, signed)


async def _keys(
    request: web.Request,
    signed: Signed,
    *,
    created: str = "",
    problem: str = "",
    status: int = 200,
) -> web.Response:
    session = signed.session
    keys = await signed.deps.keys.list(None if session.is_admin else session.owner_id)
    return page(
        request,
        "keys.html",
        signed,
        status=status,
        keys=keys,
        created=created,
        problem=problem,
        roles=[role.value for role in KeyRole],
    )


async def create_key(request: web.Request) -> web.Response:
    """Answers the page itself, not a redirect: the new key is shown once, never in a URL."""
    signed, form = await changing(request)
    session = signed.session
    owner = form.get("owner", "").strip() or session.owner_id
    try:
        role = KeyRole(form.get("role", KeyRole.MEMBER.value))
        if not session.is_admin and (owner != session.owner_id or role is KeyRole.ADMIN):
            raise Forbidden("keys for another owner, or admin keys, need an admin key")
        key, _ = await signed.deps.keys.create(
            owner_id=owner,
            name=form.get("name", "").strip(),
            one_time=form.get("one_time") == "on",
            role=role,
        )
    except (ValueError, SwitchboardError) as exc:
        detail = exc.detail if isinstance(exc, SwitchboardError) else f"role: {exc}"
        return await _keys(request, signed, problem=detail, status=400)
    return await _keys(request, signed, created=key)


async def revoke_key(request: web.Request) -> web.StreamResponse:
    signed, form = await changing(request)
    session = signed.session
    key_id = form.get("key_id", "")
    if not session.is_admin:
        mine = {key.id for key in await signed.deps.keys.list(session.owner_id)}
        if key_id not in mine:
            raise NotFound("API key", key_id)
    revoked = await signed.deps.keys.revoke(key_id)
    raise back("/console/keys", f"key {revoked} revoked")
