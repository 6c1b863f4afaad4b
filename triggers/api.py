"""The runtime API (PROTOCOLS part A): the intake whose "reply" is the stored result.

Works with ``codewords-client`` 0.4.11 unchanged: raw or ``Bearer`` keys,
``X-Provisioned-Request-Id`` husks, long-polled ``/result`` (408 while running), NDJSON ``/logs``
that close when the run ends.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime

from aiohttp import web

from core.clock import parse_iso
from core.errors import BadRequest, NotFound, ResultNotReady, SyncTimeout
from core.json_input import parse_json
from core.models import (
    Grant,
    RunRecord,
    RunRequest,
    RunStatus,
    Source,
    SubmittedRun,
    new_run_id,
)
from core.ports import RunGateway
from core.tracing import TRACE
from triggers.auth import Authenticator, Principal
from triggers.files import FileStore

LOG_STREAM_CHECK_SECONDS = 1.0
"""How often an open /logs stream checks its client is still there (aiohttp does not say)."""


class RuntimeApi:
    """Handlers for the runtime API. Each one: authenticate, parse, hand to the gateway, answer."""

    def __init__(
        self,
        gateway: RunGateway,
        auth: Authenticator,
        files: FileStore,
        *,
        sync_timeout: float,
        logs_max_seconds: float = 3600.0,
    ) -> None:
        """``sync_timeout`` and ``logs_max_seconds`` are ``runtime``'s (a section of
        ``dispatch``, which the triggers do not import)."""
        self._gateway = gateway
        self._auth = auth
        self._files = files
        self._sync_timeout = sync_timeout
        self._logs_max_seconds = logs_max_seconds
        self._closing = asyncio.Event()

    def route_table(self) -> list[web.RouteDef]:
        """The runtime API's routes, bound to this object (GETs without HEAD: a HEAD would run)."""
        return [
            web.post("/provision-request", self.provision),
            web.post("/run/{service_id}", self.run_sync),
            web.post("/run/{service_id}/{path:.*}", self.run_sync),
            web.get("/run/{service_id}", self.run_sync, allow_head=False),
            web.get("/run/{service_id}/{path:.*}", self.run_sync, allow_head=False),
            web.post("/run_async/{service_id}", self.run_async),
            web.post("/run_async/{service_id}/{path:.*}", self.run_async),
            web.get("/result/{request_id}", self.result, allow_head=False),
            web.get("/request/{request_id}", self.details, allow_head=False),
            web.get("/logs/{request_id}", self.logs, allow_head=False),
            web.post("/file", self.create_file),
            web.get("/file/{file_id}", self.describe_file, allow_head=False),
        ]

    def stop_log_streams(self) -> None:
        """End every open /logs stream (at shutdown, so it need not wait for them)."""
        self._closing.set()

    async def _principal(self, request: web.Request) -> Principal:
        return await self._auth.authenticate(request.headers.get("Authorization"))

    async def provision(self, request: web.Request) -> web.Response:
        principal = await self._principal(request)
        run_id = new_run_id()
        await self._auth.authorise_start(principal, run_id, provisioned=False)
        try:
            await self._gateway.provision(principal.owner_id, principal.caller_id, run_id)
        except Exception:
            await self._auth.cancel_start(principal, run_id)
            raise
        return web.json_response({"request_id": run_id})

    async def run_sync(self, request: web.Request) -> web.Response:
        received = time.perf_counter_ns()
        record = await self._start(request, waited=True)
        TRACE.mark(record.id, "api.received", received)
        finished = await self._gateway.wait_until_finished(record.id, self._sync_timeout)
        if finished is None or not finished.finished:
            raise SyncTimeout(record.id, self._sync_timeout)
        headers = {"X-Request-Id": finished.id}
        if finished.response_status is None:
            status = 504 if finished.status is RunStatus.TIMED_OUT else 502
            detail = f"request {finished.id} {finished.status.value}: {finished.error}"
            return web.json_response(
                {"detail": detail, "request_id": finished.id}, status=status, headers=headers
            )
        TRACE.mark(finished.id, "answered")
        return web.Response(
            status=finished.response_status,
            body=finished.response_body,
            content_type=None,
            headers={
                **headers,
                "Content-Type": finished.response_content_type or "application/json",
            },
        )

    async def run_async(self, request: web.Request) -> web.Response:
        submitted = await self._start(request)
        # The hot path of intake: a fixed-shape answer needs no JSON encoder.
        return web.Response(
            body=b'{"request_id": "' + submitted.id.encode() + b'"}',
            content_type="application/json",
        )

    async def _start(self, request: web.Request, *, waited: bool = False) -> SubmittedRun:
        principal = await self._principal(request)
        service_id = request.match_info["service_id"]
        if not await self._gateway.has_service(service_id):
            raise NotFound("service", service_id)
        body = await _json_body(request)
        provisioned = _stored_header(request, "X-Provisioned-Request-Id")
        run_id = provisioned or new_run_id()
        idempotency = _stored_header(request, "Idempotency-Key")
        # Everything that can refuse the request comes before a one-time key is spent on it.
        run_request = RunRequest(
            owner_id=principal.owner_id,
            service_id=service_id,
            path=request.match_info.get("path", ""),
            method="GET" if request.method == "GET" else "POST",
            body=body,
            source=Source.API,
            idempotency_key=f"api:{principal.owner_id}:{idempotency}" if idempotency else None,
            correlation_id=_stored_header(request, "X-Correlation-Id"),
            caller_id=principal.caller_id,
            context=principal.rights.context(),  # a run key's grants bind the built-ins it starts
            provisioned_run_id=provisioned,
            run_id=None if provisioned else run_id,
        )
        await self._auth.authorise_start(principal, run_id, provisioned=provisioned is not None)
        try:
            return await self._gateway.submit(run_request, waited=waited)
        except Exception:
            if provisioned is None:  # a one-time key is spent only on a run that was made
                await self._auth.cancel_start(principal, run_id)
            raise

    async def _readable(self, request: web.Request) -> RunRecord:
        principal = await self._principal(request)
        run_id = request.match_info["request_id"]
        self._auth.authorise_read(principal, run_id)
        record = await self._gateway.get(run_id)
        if record is None or record.owner_id != principal.owner_id:
            raise NotFound("request", run_id)
        return record

    async def result(self, request: web.Request) -> web.Response:
        record = await self._readable(request)
        wait = _seconds(request.query.get("timeout"), upper=self._sync_timeout)
        if not record.finished and wait > 0:
            record = await self._gateway.wait_until_finished(record.id, wait) or record
        if not record.finished:
            raise ResultNotReady(record.id, wait)
        return web.json_response(record.to_api())

    async def details(self, request: web.Request) -> web.Response:
        record = await self._readable(request)
        return web.json_response(record.to_api())

    async def logs(self, request: web.Request) -> web.StreamResponse:
        """NDJSON lines until the run has finished and every line has been sent, the client
        left, ``logs_max_seconds`` passed, or the server shuts down."""
        record = await self._readable(request)
        after = request.query.get("after")
        try:
            after_time = parse_iso(after) if after else None
        except ValueError as exc:
            raise BadRequest(f"'after' is not an ISO 8601 timestamp: {after!r}") from exc
        response = web.StreamResponse(
            headers={"Content-Type": "application/x-ndjson", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        sending = asyncio.create_task(_send_logs(self._gateway, response, record.id, after_time))
        try:
            await self._until_done_or_stopped(request, sending)
        finally:
            if not sending.done():
                sending.cancel()
            await asyncio.gather(sending, return_exceptions=True)
        if _client_gone(request):
            return response
        await response.write_eof()
        return response

    async def _until_done_or_stopped(
        self, request: web.Request, sending: asyncio.Task[None]
    ) -> None:
        """Return when ``sending`` ends, the client is gone, the stream's life is over, or the
        server is closing: a husk never filled would otherwise be followed forever."""
        closing = asyncio.create_task(self._closing.wait())
        loop = asyncio.get_running_loop()
        end = loop.time() + self._logs_max_seconds
        try:
            while not sending.done() and not closing.done() and not _client_gone(request):
                left = end - loop.time()
                if left <= 0:
                    return
                await asyncio.wait(
                    {sending, closing},
                    timeout=min(left, LOG_STREAM_CHECK_SECONDS),
                    return_when=asyncio.FIRST_COMPLETED,
                )
            if sending.done() and not _client_gone(request):
                sending.result()  # its error, if it failed (not the client's hang-up)
        finally:
            closing.cancel()

    async def create_file(self, request: web.Request) -> web.Response:
        principal = await self._principal(request)
        self._auth.refuse_one_time(principal, "file uploads")
        return web.json_response(
            await self._files.create(principal.owner_id, request.query.get("filename", ""))
        )

    async def describe_file(self, request: web.Request) -> web.Response:
        principal = await self._principal(request)
        self._auth.refuse_one_time(principal, "files")
        principal.require(Grant.FILES, "look up its owner's files by id")
        return web.json_response(
            await self._files.describe(principal.owner_id, request.match_info["file_id"])
        )


async def _send_logs(
    gateway: RunGateway, response: web.StreamResponse, run_id: str, after: datetime | None
) -> None:
    async for entries in gateway.follow_logs(run_id, after_time=after):
        await response.write(
            b"".join(json.dumps(entry.to_api()).encode() + b"\n" for entry in entries)
        )


def _stored_header(request: web.Request, name: str) -> str | None:
    """A header whose value is stored with the run: UTF-8 (aiohttp hands other bytes on as
    surrogate escapes, which the database refuses, failing the whole intake batch)."""
    value = request.headers.get(name)
    if value is not None:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise BadRequest(f"{name} is not UTF-8") from exc
    return value or None


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


async def _json_body(request: web.Request) -> str | None:
    if request.method == "GET":
        return None
    raw = await request.read()
    if not raw.strip():
        return None
    parse_json(raw, what="the request body")  # refused here, before anything is stored
    return raw.decode("utf-8")


def _seconds(value: str | None, *, upper: float) -> float:
    if value is None or value == "":
        return 0.0
    try:
        seconds = float(value)
    except ValueError as exc:
        raise BadRequest(f"'timeout' must be a number of seconds, not {value!r}") from exc
    if seconds < 0:
        raise BadRequest("'timeout' must not be negative")
    return min(seconds, upper)
