"""The fair ceiling for an intake: verify the signature, group-commit the raw body, answer 200.

``python -m bench.reference --port N --database FILE``; secrets come from the environment
(``BENCH_SLACK_SECRET``, ``BENCH_TWILIO_TOKEN``, ``BENCH_API_KEY``), never argv. Same checks as
Switchboard's edges (slack_sdk's ``SignatureVerifier``: v0 HMAC, 5-minute window; twilio's
``RequestValidator``), same durability (SQLite WAL, ``synchronous=FULL``, one writer thread
committing everything that queued up while the previous commit ran).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import os
import sqlite3
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

from aiohttp import web
from slack_sdk.signature import SignatureVerifier
from twilio.request_validator import RequestValidator

Pending = tuple[str, str, bytes, asyncio.Future[None]]


class GroupCommit:
    """One writer: each commit takes every body queued meanwhile (the intake's group commit)."""

    def __init__(self, path: str) -> None:
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute(
            "create table if not exists events (id text primary key, source text, body blob)"
        )
        self.queue: list[Pending] = []
        self.wake = asyncio.Event()
        self.thread = ThreadPoolExecutor(1)

    def write(self, rows: list[tuple[str, str, bytes]]) -> None:
        self.db.execute("begin")  # one transaction, one WAL fsync for the whole batch
        self.db.executemany("insert into events values (?, ?, ?)", rows)
        self.db.execute("commit")

    async def store(self, source: str, body: bytes) -> str:
        event_id = uuid.uuid4().hex
        done = asyncio.get_running_loop().create_future()
        self.queue.append((event_id, source, body, done))
        self.wake.set()
        await done
        return event_id

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self.wake.wait()
            self.wake.clear()
            batch, self.queue = self.queue, []
            rows = [(event_id, source, body) for event_id, source, body, _ in batch]
            await loop.run_in_executor(self.thread, self.write, rows)
            for *_, done in batch:
                done.set_result(None)


def make_app(database: str, slack_secret: str, twilio_token: str, api_key: str) -> web.Application:
    slack, twilio = SignatureVerifier(slack_secret), RequestValidator(twilio_token)
    store = GroupCommit(database)

    async def slack_events(request: web.Request) -> web.Response:
        body = await request.read()
        if not slack.is_valid_request(body, dict(request.headers)):
            raise web.HTTPUnauthorized(text='{"detail": "bad Slack signature"}')
        await store.store("slack", body)
        return web.Response()

    async def twilio_whatsapp(request: web.Request) -> web.Response:
        body = await request.read()
        form = dict(await request.post())
        if not twilio.validate(
            str(request.url), form, request.headers.get("X-Twilio-Signature", "")
        ):
            raise web.HTTPForbidden(text='{"detail": "bad Twilio signature"}')
        await store.store("whatsapp", body)
        return web.Response(text="<Response/>", content_type="text/xml")

    async def run_async(request: web.Request) -> web.Response:
        if not hmac.compare_digest(request.headers.get("Authorization", ""), f"Bearer {api_key}"):
            raise web.HTTPUnauthorized(text='{"detail": "bad key"}')
        return web.json_response({"request_id": await store.store("run", await request.read())})

    async def writer(_app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(store.run())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def health(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.cleanup_ctx.append(writer)
    app.router.add_post("/slack/events", slack_events)
    app.router.add_post("/twilio/whatsapp", twilio_whatsapp)
    app.router.add_post("/run_async/{service}/", run_async)
    app.router.add_get("/healthz", health)
    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--database", required=True)
    args = parser.parse_args()
    env = os.environ
    app = make_app(
        args.database, env["BENCH_SLACK_SECRET"], env["BENCH_TWILIO_TOKEN"], env["BENCH_API_KEY"]
    )
    web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None)
