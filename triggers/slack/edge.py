"""The Slack edge: ``/slack/events``, ``/slack/commands`` and the OAuth install pages.

The ack path does only what the inbox pattern allows (DESIGN §1): the signature over the raw
bytes (PROTOCOLS §1.1), ``url_verification`` and ``ssl_check`` answered at once (§1.2, §1.4),
the two keys, :meth:`core.inbox.Inbox.accept`, then 200. No bolt, no Web API call, no file copy,
no database look-up: :mod:`triggers.slack.process` does that later, from the stored request.

Keys. Events API: the dedupe key is ``slack:<event_id>`` (Slack's id of one delivery, the same on
every retry, §1.3); the ordering key is the conversation, ``slack:<team>:<channel>:<thread root>``,
so a mention, its ``message`` twin and the follow-ups in its thread are processed one at a time,
in arrival order. Slash commands and interactivity: ``slack:trigger:<trigger_id>`` when there is
one; Slack never retries them (§1.4), the id is unique per invocation, so a repeated delivery
(a proxy's retry) is stored once and nothing real is ever merged; without one, no dedupe key.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import aiohttp
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.oauth.async_oauth_flow import AsyncOAuthFlow
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.signature import Clock as SdkClock
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from core.clock import Clock
from core.errors import BadRequest, Unauthorized
from core.inbox import ArrivingEvent, Inbox
from core.json_input import parse_json
from triggers.slack.installations import (
    SlackInstallations,
    SlackOAuthStates,
    explicit_oauth_settings,
)
from triggers.slack.payloads import choose_workflow, team_of
from triggers.slack.settings import SlackSettings

TRIGGER = "slack"
SIGNATURE_MAX_AGE = 300
"""Seconds a signed request stays valid (PROTOCOLS §1.1: the five-minute replay window)."""
STORED_HEADERS = ("content-type",)
"""What processing needs of the request's headers: bolt parses the body by its content type."""


class _Seconds(SdkClock):
    """slack_sdk's clock (``now()`` in epoch seconds) over ours, so tests control the window."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock

    def now(self) -> float:
        return self._clock.now().timestamp()


class _RawBytesVerifier(SignatureVerifier):
    """slack_sdk's verifier (the five-minute window, ``compare_digest``) over the bytes as they
    came: its own ``generate_signature`` decodes them as UTF-8 first and raises on a body that
    is not, before it could tell a signed request from an unsigned one."""

    def generate_signature(self, *, timestamp: str, body: str | bytes) -> str | None:
        raw = body.encode() if isinstance(body, str) else body
        message = b"v0:" + timestamp.encode() + b":" + raw
        digest = hmac.new(self.signing_secret.encode(), message, hashlib.sha256).hexdigest()
        return f"v0={digest}"


@dataclass(frozen=True, slots=True)
class EdgeDeps:
    """What the edge needs once the services run (the composition root's ``start`` gives it)."""

    inbox: Inbox
    clock: Clock
    installations: SlackInstallations
    oauth_states: SlackOAuthStates
    redirect_uri: str


class SlackEdge:
    """The aiohttp sub-application mounted at ``/slack`` (URLs as Slack's app config has them)."""

    def __init__(self, settings: SlackSettings) -> None:
        self._settings = settings
        secret = settings.signing_secret
        self._secret = secret.get_secret_value() if secret is not None else None
        self._deps: EdgeDeps | None = None
        self._verifier: SignatureVerifier | None = None
        self._oauth_flow: AsyncOAuthFlow | None = None

    def attach(self, deps: EdgeDeps) -> None:
        self._deps = deps
        if self._secret is not None:
            self._verifier = _RawBytesVerifier(self._secret, clock=_Seconds(deps.clock))

    def app(self) -> web.Application:
        """The event routes where ``http_routes`` (Socket Mode turns them off), the install
        pages always (OAuth needs a browser's redirect either way)."""
        app = web.Application()
        if self._settings.http_routes:
            app.router.add_post("/events", self.events)
            app.router.add_post("/commands", self.events)
        app.router.add_get("/install", self.install)
        app.router.add_get("/oauth_redirect", self.oauth_redirect)
        app.cleanup_ctx.append(self._oauth)
        return app

    async def _oauth(self, _app: web.Application) -> AsyncIterator[None]:
        """The install flow's own connection pool (``oauth.v2.access``), only with OAuth on."""
        if not self._settings.oauth_enabled or self._deps is None:
            yield
            return
        async with aiohttp.ClientSession() as session:
            deps = self._deps
            oauth = explicit_oauth_settings(
                self._settings, deps.installations, deps.oauth_states, deps.redirect_uri
            )
            client = AsyncWebClient(base_url=self._settings.api_url, session=session)
            self._oauth_flow = AsyncOAuthFlow(client=client, settings=oauth)
            yield
            self._oauth_flow = None

    async def events(self, request: web.Request) -> web.Response:
        """Events API posts and slash commands (interactivity too): stored, then 200."""
        deps, verifier = self._deps, self._verifier
        if deps is None or verifier is None:
            raise web.HTTPServiceUnavailable(text="the Slack channel is starting")
        raw = await request.read()
        _verify(verifier, raw, request.headers)
        body = _parse(raw, request.content_type, request.charset)
        if body.get("type") == "url_verification":
            return web.json_response({"challenge": body.get("challenge")})
        if body.get("ssl_check") == "1":
            return web.Response(status=200, text="")
        reply = ""
        if "command" in body:
            store, reply = command_answer(self._settings, body)
            if not store:
                return web.Response(text=reply)
        content_type = request.headers.get("Content-Type", "")
        await deps.inbox.accept(
            ArrivingEvent(
                trigger=TRIGGER,
                ordering_key=ordering_key(body),
                body=raw,
                dedupe_key=dedupe_key(body),
                headers={"content-type": content_type} if content_type else {},
            )
        )
        # A duplicate is acknowledged like the original (PROTOCOLS §1.3).
        return web.Response(text=reply) if reply else web.Response(status=200)

    async def install(self, request: web.Request) -> web.Response:
        flow = self._flow()
        return await to_aiohttp_response(await flow.handle_installation(_bodiless(request)))

    async def oauth_redirect(self, request: web.Request) -> web.Response:
        flow = self._flow()
        return await to_aiohttp_response(await flow.handle_callback(_bodiless(request)))

    def _flow(self) -> AsyncOAuthFlow:
        if self._oauth_flow is None:
            raise web.HTTPNotFound(text="OAuth install is not configured ([slack] client_id)")
        return self._oauth_flow


def _verify(verifier: SignatureVerifier, raw: bytes, headers: Mapping[str, str]) -> None:
    """Raise :class:`Unauthorized` unless ``X-Slack-Signature`` signs ``raw`` (PROTOCOLS §1.1)."""
    timestamp = headers.get("X-Slack-Request-Timestamp") or ""
    signature = headers.get("X-Slack-Signature") or ""
    if (
        not (timestamp.isascii() and timestamp.isdigit())
        or not signature.isascii()
        or not signature
    ):
        raise Unauthorized("missing or malformed X-Slack-Request-Timestamp or X-Slack-Signature")
    if abs(verifier.clock.now() - int(timestamp)) > SIGNATURE_MAX_AGE:
        raise Unauthorized("stale X-Slack-Request-Timestamp: older than five minutes")
    if not verifier.is_valid(raw, timestamp, signature):
        raise Unauthorized("invalid X-Slack-Signature: not signed with [slack] signing_secret")


def _parse(raw: bytes, content_type: str, charset: str | None) -> dict[str, Any]:
    """The body as an object, or :class:`BadRequest` naming what is wrong (bolt would 500)."""
    if (charset or "utf-8").lower() not in {"utf-8", "utf8"}:
        raise BadRequest(f"Slack posts UTF-8, not charset {charset!r}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"the body is not UTF-8: {exc.reason} at byte {exc.start}") from exc
    if content_type == "application/json" or text.startswith("{"):
        body = parse_json(raw)
        if not isinstance(body, dict):
            raise BadRequest("the body must be a JSON object")
        return body
    try:
        params = dict(parse_qsl(text, keep_blank_values=True, errors="strict"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadRequest(f"the form is not URL-encoded UTF-8: {exc}") from exc
    if "payload" in params:
        payload = parse_json(params["payload"], what="'payload'")
        if not isinstance(payload, dict):
            raise BadRequest("'payload' must be a JSON object")
        return {"payload": payload}
    return dict(params)


def command_answer(settings: SlackSettings, body: Mapping[str, Any]) -> tuple[bool, str]:
    """Whether a slash command is stored, and its immediate answer (PROTOCOLS §1.4: within
    3 s): ``command_ack``, or, when no route takes the command (settings only, no I/O), a line
    saying so and nothing stored."""
    chosen = choose_workflow(
        settings,
        channel=str(body.get("channel_id") or ""),
        text=str(body.get("text") or "").strip(),
        command=str(body.get("command") or ""),
    )
    if chosen is None:
        return False, f"No workflow answers {body.get('command')} here."
    return True, settings.command_ack


def dedupe_key(body: Mapping[str, Any]) -> str | None:
    """See the module docstring: ``event_id`` for events, ``trigger_id`` for the rest."""
    if body.get("event_id"):
        return f"slack:{body['event_id']}"
    source = body.get("payload") if isinstance(body.get("payload"), dict) else body
    trigger = source.get("trigger_id") if isinstance(source, Mapping) else None
    return f"slack:trigger:{trigger}" if trigger else None


def ordering_key(body: Mapping[str, Any]) -> str:
    """The conversation: ``slack:<team>:<channel>[:<thread root>]``; commands have no thread."""
    payload = body.get("payload")
    if isinstance(payload, Mapping):
        team = str((payload.get("team") or {}).get("id") or "")
        channel = str((payload.get("channel") or {}).get("id") or "")
        container = payload.get("container") or {}
        root = container.get("thread_ts") or container.get("message_ts")
        return _key(team, channel, str(root) if root else None)
    team = team_of(body)
    event = body.get("event")
    if isinstance(event, Mapping):
        root = event.get("thread_ts") or event.get("ts")
        return _key(team, str(event.get("channel") or ""), str(root) if root else None)
    return _key(team, str(body.get("channel_id") or ""), None)


def _key(team: str, channel: str, root: str | None) -> str:
    if not channel:
        return f"slack:{team}"
    return f"slack:{team}:{channel}:{root}" if root else f"slack:{team}:{channel}"


def _bodiless(request: web.Request) -> AsyncBoltRequest:
    """Bolt's request for a GET of the install flow: its query and headers, never a body (bolt's
    adapter would decode one in whatever charset it claims, a 500 for an unknown one)."""
    return AsyncBoltRequest(body="", query=request.query_string, headers=dict(request.headers))
