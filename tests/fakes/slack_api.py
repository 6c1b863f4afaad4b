"""A fake Slack Web API on 127.0.0.1: records every call and answers like Slack (PROTOCOLS §1).

Methods: ``auth.test``, ``chat.postMessage``, ``reactions.add/remove``, ``users.info``,
``files.getUploadURLExternal`` + the upload URL + ``files.completeUploadExternal`` (the
``files_upload_v2`` flow), ``oauth.v2.access``, ``apps.connections.open`` (Socket Mode:
tests/fakes/slack_socket.py); plus ``response_url`` endpoints for slash commands
and private file downloads. Failures are programmed per method with :meth:`SlackApi.fail_next`
(HTTP 429 with ``Retry-After``, HTTP 200 or 500 ``ok: false``, or a dropped connection). Tests
(Slack's and the scheduler's) wait on what arrived with :meth:`SlackApi.wait_for`.

Usage::

    async with SlackApi.running() as slack:
        settings = {"api_url": slack.api_url, ...}
        await slack.wait_for(lambda: slack.posts)
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from slack_sdk.signature import SignatureVerifier

from tests.fakes.slack_socket import SocketMode

BOT_USER_ID = "UBOT"
BOT_ID = "BBOT"
TEAM_ID = "T111"


@dataclass(frozen=True)
class Call:
    """One request the fake received."""

    method: str
    args: dict[str, Any]
    token: str | None
    at: float = field(default_factory=time.monotonic)
    """When it arrived (``time.monotonic``), for pacing and ``Retry-After`` checks."""


@dataclass
class _Failure:
    status: int
    error: str
    retry_after: int | None
    drop: bool
    after: int


@dataclass
class SlackApi:
    base_url: str = ""
    calls: list[Call] = field(default_factory=list)
    responses: list[dict[str, Any]] = field(default_factory=list)
    """Bodies POSTed to ``response_url``s (slash command results)."""
    uploads: dict[str, bytes] = field(default_factory=dict)
    """Bytes uploaded to ``files.getUploadURLExternal`` URLs, by file id."""
    private_files: dict[str, bytes] = field(default_factory=dict)
    """Files served at ``{base_url}/files-pri/<name>`` (a bot token is required)."""
    downloads: list[str] = field(default_factory=list)
    """Names of the private files downloaded, in order."""
    redirects: dict[str, str] = field(default_factory=dict)
    """Private file name → a URL its download redirects to (a hostile or moved file)."""
    users: dict[str, str] = field(default_factory=dict)
    """User id → display name for ``users.info``."""
    tokens: dict[str, tuple[str, str]] = field(default_factory=dict)
    """Bot token → (team id, bot user id), for ``auth.test``; unknown tokens are ``TEAM_ID``."""
    socket: SocketMode = field(default_factory=SocketMode)
    """Socket Mode: ``apps.connections.open`` answers a URL of this fake's WebSocket end."""
    holds: dict[str, asyncio.Event] = field(default_factory=dict)
    """Method → an event its calls wait for before being answered (a slow Slack)."""
    held: int = 0
    """Calls that have waited (or are waiting) on one of ``holds``."""
    _failures: dict[str, list[_Failure]] = field(default_factory=dict)
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    _ts: int = 0

    @property
    def api_url(self) -> str:
        return f"{self.base_url}/api/"

    def slack_section(self, signing_secret: str, **overrides: Any) -> dict[str, Any]:
        """The server's ``slack`` settings aimed at this fake: a bot token, no channel pacing."""
        return {
            "signing_secret": signing_secret,
            "bot_token": "xoxb-test",
            "api_url": self.api_url,
            "channel_interval": 0,
            **overrides,
        }

    def socket_section(self, **overrides: Any) -> dict[str, Any]:
        """The ``slack`` settings of a Socket Mode app aimed at this fake (no signing secret)."""
        return {
            "app_token": "xapp-test",
            "socket_mode": True,
            "bot_token": "xoxb-test",
            "api_url": self.api_url,
            "channel_interval": 0,
            **overrides,
        }

    def response_url(self, name: str = "cmd") -> str:
        return f"{self.base_url}/response/{name}"

    def private_url(self, name: str) -> str:
        return f"{self.base_url}/files-pri/{name}"

    def fail_next(
        self,
        method: str,
        *,
        error: str = "ratelimited",
        status: int = 200,
        retry_after: int | None = None,
        drop: bool = False,
        after: int = 0,
    ) -> None:
        """The next call of ``method`` fails (``status`` 429 sends ``Retry-After``), or, with
        ``drop``, has its connection closed unanswered; ``after`` lets that many calls succeed
        first. Failures queue up: each one applies once the ones before it are used."""
        failure = _Failure(status, error, retry_after, drop, after)
        self._failures.setdefault(method, []).append(failure)

    def called(self, method: str) -> list[Call]:
        return [call for call in self.calls if call.method == method]

    @property
    def posts(self) -> list[Call]:
        """Successful ``chat.postMessage`` calls."""
        return [call for call in self.called("chat.postMessage") if call.args.get("_ok")]

    async def wait_for(self, condition: Callable[[], object], timeout: float = 20.0) -> None:
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: bool(condition()))

    async def _record(self, call: Call) -> None:
        async with self._changed:
            self.calls.append(call)
            self._changed.notify_all()

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # --- the Web API ---------------------------------------------------------------------

    async def api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        if request.content_type == "application/json":
            args: dict[str, Any] = await request.json()
        else:
            args = dict(await request.post())
        args.update(request.query)  # slack_sdk sends some methods' arguments as query parameters
        authorization = request.headers.get("Authorization", "")
        token = authorization.removeprefix("Bearer ") or None
        call = Call(method, args, token)
        hold = self.holds.get(method)
        if hold is not None:
            self.held += 1
            await self._notify()
            await hold.wait()
        failures = self._failures.get(method)
        if failures and failures[0].after > 0:
            failures[0].after -= 1
        elif failures:
            failure = failures.pop(0)
            await self._record(call)
            if failure.drop:
                assert request.transport is not None
                request.transport.close()  # the client sees the connection dropped
                return web.Response(status=500)
            headers = (
                {"Retry-After": str(failure.retry_after)} if failure.retry_after is not None else {}
            )
            return web.json_response(
                {"ok": False, "error": failure.error}, status=failure.status, headers=headers
            )
        answer = self._answer(method, args, token)
        if answer.get("ok"):
            args["_ok"] = True
        await self._record(call)
        return web.json_response(answer)

    def _history(self, method: str, args: dict[str, Any]) -> list[dict[str, Any]]:
        """Our successful posts in the channel (a thread's, for ``conversations.replies``), the
        way Slack lists them: ``metadata`` only when ``include_all_metadata`` is asked for."""
        found = []
        for call in self.posts:
            if call.args.get("channel") != args.get("channel"):
                continue
            thread = call.args.get("thread_ts")
            if method == "conversations.replies" and thread != args.get("ts"):
                continue
            message: dict[str, Any] = {"type": "message", "text": call.args.get("text")}
            if thread:
                message["thread_ts"] = thread
            wanted = str(args.get("include_all_metadata", "")).lower() in {"1", "true"}
            if wanted and call.args.get("metadata"):
                message["metadata"] = call.args["metadata"]
            found.append(message)
        return found

    def _answer(self, method: str, args: dict[str, Any], token: str | None) -> dict[str, Any]:
        team, bot_user = self.tokens.get(token or "", (TEAM_ID, BOT_USER_ID))
        if method == "auth.test":
            return {
                "ok": True,
                "user_id": bot_user,
                "bot_id": BOT_ID,
                "team_id": team,
                "team": "Test",
            }
        if method == "apps.connections.open":
            return self.socket.ticket(token)
        if method == "chat.postMessage":
            self._ts += 1
            ts = f"1800000000.{self._ts:06d}"
            return {"ok": True, "channel": args.get("channel"), "ts": ts, "message": {"ts": ts}}
        if method in {"conversations.replies", "conversations.history"}:
            return {"ok": True, "messages": self._history(method, args), "has_more": False}
        if method in {"reactions.add", "reactions.remove"}:
            return {"ok": True}
        if method == "users.info":
            user = str(args.get("user"))
            name = self.users.get(user)
            if name is None:
                return {"ok": False, "error": "user_not_found"}
            return {
                "ok": True,
                "user": {"id": user, "name": name, "profile": {"display_name": name}},
            }
        if method == "files.getUploadURLExternal":
            file_id = f"F{len(self.uploads) + len(self.called(method)):06d}"
            return {
                "ok": True,
                "upload_url": f"{self.base_url}/upload/{file_id}",
                "file_id": file_id,
            }
        if method == "files.completeUploadExternal":
            files = (
                json.loads(args["files"]) if isinstance(args.get("files"), str) else args["files"]
            )
            return {
                "ok": True,
                "files": [{"id": item["id"], "title": item.get("title")} for item in files],
            }
        if method == "oauth.v2.access":
            code = str(args.get("code"))
            return {
                "ok": True,
                "access_token": f"xoxb-{code}",
                "token_type": "bot",
                "scope": "chat:write,app_mentions:read",
                "bot_user_id": f"UB{code.upper()}",
                "app_id": "A111",
                "team": {"id": f"T{code.upper()}", "name": code},
                "enterprise": None,
                "is_enterprise_install": False,
                "authed_user": {"id": "UINSTALLER"},
            }
        return {"ok": False, "error": "unknown_method"}

    async def upload(self, request: web.Request) -> web.Response:
        self.uploads[request.match_info["file_id"]] = await request.read()
        await self._notify()
        return web.Response(text=f"OK - {len(self.uploads)}")

    async def respond(self, request: web.Request) -> web.Response:
        body = await request.json()
        async with self._changed:
            self.responses.append({"url": str(request.url), **body})
            self._changed.notify_all()
        return web.Response(text="ok")

    async def private_file(self, request: web.Request) -> web.Response:
        if not request.headers.get("Authorization", "").startswith("Bearer xoxb-"):
            return web.Response(status=403)
        self.downloads.append(request.match_info["name"])
        if request.match_info["name"] in self.redirects:
            raise web.HTTPFound(self.redirects[request.match_info["name"]])
        data = self.private_files.get(request.match_info["name"])
        if data is None:
            return web.Response(status=404)
        return web.Response(body=data, content_type="application/octet-stream")

    @classmethod
    @asynccontextmanager
    async def running(cls, host: str = "127.0.0.1") -> AsyncIterator[SlackApi]:
        """The fake on ``host`` (bench/chaos.py: a bridge address) and a free port."""
        fake = cls()
        app = web.Application()
        app.router.add_route("*", "/api/{method}", fake.api)
        app.router.add_post("/upload/{file_id}", fake.upload)
        app.router.add_post("/response/{name}", fake.respond)
        app.router.add_get("/files-pri/{name}", fake.private_file)
        app.router.add_get("/link", fake.socket.link)
        runner = web.AppRunner(app)
        await runner.setup()
        with socket.socket() as probe:
            probe.bind((host, 0))
            port = probe.getsockname()[1]
        await web.TCPSite(runner, host, port).start()
        fake.base_url = f"http://{host}:{port}"
        fake.socket.ws_url = f"ws://{host}:{port}/link"
        try:
            yield fake
        finally:
            await fake.socket.close()
            await runner.cleanup()


def signed_headers(
    secret: str, body: str, *, timestamp: int | None = None, content_type: str = "application/json"
) -> dict[str, str]:
    """Headers Slack sends with ``body``, signed with slack_sdk's own ``SignatureVerifier``."""
    stamp = str(timestamp if timestamp is not None else int(time.time()))
    signature = SignatureVerifier(secret).generate_signature(timestamp=stamp, body=body)
    assert signature is not None
    return {
        "Content-Type": content_type,
        "X-Slack-Request-Timestamp": stamp,
        "X-Slack-Signature": signature,
    }
