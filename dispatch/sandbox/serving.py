"""Serving one run's request: wait for the workflow to be ready, send the request on its Unix
socket, all under the run's timeout while its limits are watched (:func:`serve`, the one loop of
the fresh, forked and warm paths and of the unsandboxed runner). README "Sandbox" has the why."""

from __future__ import annotations

import asyncio
import io
import logging
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Literal, Protocol

import httpx

from core.models import Invocation, Outcome, RunStatus, WorkflowLimits
from core.ports import LogSink
from dispatch.sandbox.cgroups import RunCgroup, limit_error

logger = logging.getLogger(__name__)

MAX_LINE_BYTES = 16 * 1024
DRAIN_SECONDS = 2.0
"""How long the rest of a killed workflow's output may take to arrive before it is dropped."""
CRASH_EXIT_GRACE_SECONDS = 5.0
"""How long to wait for the exit code of a workflow that dropped the connection mid-request."""
LIMIT_POLL_SECONDS = 0.1


class RunProcess(Protocol):
    """A run's process as serving and ending it need: a child process, a sandbox, a zygote's
    child or a kept warm process."""

    @property
    def returncode(self) -> int | None: ...

    async def wait(self) -> int: ...

    def kill(self) -> None: ...


async def serve(
    invocation: Invocation,
    request: Callable[[], Awaitable[Outcome]],
    watched: tuple[RunCgroup, WorkflowLimits] | None = None,
) -> Outcome:
    """``request()`` (start-up included) under ``invocation.timeout``, while the cgroup's limits
    are watched: the first to end decides; a broken limit names a run that did not complete."""
    deadline = asyncio.timeout(invocation.timeout)
    serving = asyncio.create_task(_call(request))
    watcher = asyncio.create_task(_watch_limits(invocation.run_id, watched))
    try:
        try:
            async with deadline:
                done, _ = await asyncio.wait(
                    {serving, watcher}, return_when=asyncio.FIRST_COMPLETED
                )
        except TimeoutError:
            if not deadline.expired():
                raise
            logger.info("run %s: timed out after %g s", invocation.run_id, invocation.timeout)
            outcome = Outcome.failure(f"timed out after {invocation.timeout:g} s", timed_out=True)
        else:
            if serving not in done:  # a limit was hit first: the watcher named it
                return Outcome.failure(watcher.result())
            outcome = serving.result()
        if watched is not None and outcome.status is not RunStatus.COMPLETED:
            broken = limit_error(watched[0].events(), watched[1])
            if broken is not None:
                return Outcome.failure(broken)
        return outcome
    finally:
        # Cancelled from outside (the run's caller gave up), the request must end too: left
        # running, it would wait on the process beside the teardown's own wait.
        serving.cancel()
        watcher.cancel()
        await asyncio.gather(serving, watcher, return_exceptions=True)


async def _call(request: Callable[[], Awaitable[Outcome]]) -> Outcome:
    return await request()


async def _watch_limits(run_id: str, watched: tuple[RunCgroup, WorkflowLimits] | None) -> str:
    """Return once the run breaks its memory or process limit, naming it (never if unwatched)."""
    if watched is None:
        await asyncio.Event().wait()
    while watched is not None:
        await asyncio.sleep(LIMIT_POLL_SECONDS)
        broken = limit_error(watched[0].events(), watched[1])
        if broken is not None:
            logger.info("run %s: %s", run_id, broken)
            return broken
    raise AssertionError("unreachable")


async def wait_until_ready(
    process: RunProcess, ready_pipe: io.FileIO, startup_timeout: float
) -> str | None:
    """None once the workflow serves, else why it never will."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), ready_pipe
    )
    ready = asyncio.create_task(reader.readline())
    exited = asyncio.create_task(process.wait())
    try:
        done, _ = await asyncio.wait(
            {ready, exited},
            timeout=startup_timeout,
            return_when=asyncio.FIRST_COMPLETED,
        )
        if ready in done and ready.result() == b"ready\n":
            return None
        if not done:
            return (
                f"the workflow did not start serving within {startup_timeout:g} s (startup timeout)"
            )
        # Either the process exited, or the pipe closed and the exit is a moment away.
        returncode = await process.wait()
        return (
            f"workflow process exited with code {returncode} before it was ready; "
            "see the run's logs"
        )
    finally:
        for task in (ready, exited):
            task.cancel()
        await asyncio.gather(ready, exited, return_exceptions=True)
        transport.close()


# Trusts no certificate authority: never used (plain HTTP), and any TLS through it would fail.
_NO_TLS = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)


async def send_request(invocation: Invocation, process: RunProcess, socket_path: Path) -> Outcome:
    headers = dict(invocation.headers)
    if invocation.body and not any(name.lower() == "content-type" for name in headers):
        headers["Content-Type"] = "application/json"
    # verify=_NO_TLS: httpx's default builds an SSL context from certifi for every transport
    # (≈ 20 ms of the event loop's CPU per run); the workflow speaks plain HTTP on a Unix socket.
    transport = httpx.AsyncHTTPTransport(uds=str(socket_path), verify=_NO_TLS)
    async with httpx.AsyncClient(transport=transport, timeout=None) as client:  # noqa: S113
        try:
            request = client.build_request(
                invocation.method,
                "http://workflow/" + invocation.path.lstrip("/"),
                content=invocation.body or None,
                headers=headers,
            )
            response = await client.send(request, stream=True)
            try:
                body = await _read_capped(response, invocation.max_response_size)
            finally:
                await response.aclose()
        except httpx.DecodingError as exc:
            return Outcome.failure(f"the workflow's answer could not be decoded: {exc}")
        except httpx.TransportError as exc:
            logger.info("run %s: connection to the workflow failed: %r", invocation.run_id, exc)
            try:
                async with asyncio.timeout(CRASH_EXIT_GRACE_SECONDS):
                    returncode: int | str = await process.wait()
            except TimeoutError:
                returncode = "unknown: it was still running"
            return Outcome.failure(
                f"workflow process crashed while handling the request (exit code {returncode})"
            )
    if body is None:
        logger.info(
            "run %s: answer larger than %s bytes: dropped",
            invocation.run_id,
            invocation.max_response_size,
        )
        return Outcome.failure(
            f"response larger than {_size(invocation.max_response_size)} "
            "(runtime.max_response_size)"
        )
    return Outcome.from_response(response.status_code, body, response.headers.get("content-type"))


async def _read_capped(response: httpx.Response, limit: int) -> bytes | None:
    """The decoded body, or ``None`` as soon as it passes ``limit`` bytes: the rest is never
    read (closing the connection stops the workflow's writes), so memory stays bounded."""
    declared = response.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return None
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


def _size(limit: int) -> str:
    """``10 MiB`` for 10485760; bytes when not a whole number of KiB or MiB."""
    for unit, scale in (("MiB", 1024 * 1024), ("KiB", 1024)):
        if limit % scale == 0:
            return f"{limit // scale} {unit}"
    return f"{limit} bytes"


async def drain(readers: list[asyncio.Task[None]], run_id: str) -> None:
    """Let the output readers of a killed run finish for a moment, then stop them."""
    _, pending = await asyncio.wait(readers, timeout=DRAIN_SECONDS)
    for task in pending:
        task.cancel()
    await asyncio.gather(*readers, return_exceptions=True)
    if pending:
        logger.warning("run %s: output still open after its processes were killed", run_id)


async def forward_lines(
    stream: asyncio.StreamReader, name: Literal["stdout", "stderr"], on_log: LogSink
) -> None:
    """Hand every line of ``stream`` to ``on_log``; lines over 16 KiB are cut."""
    buffer = bytearray()
    cutting = False  # inside a line whose first MAX_LINE_BYTES were already sent
    while chunk := await stream.read(64 * 1024):
        buffer += chunk
        while (end := buffer.find(b"\n")) >= 0:
            if not cutting:
                _emit(on_log, name, bytes(buffer[:end]))
            cutting = False
            del buffer[: end + 1]
        if len(buffer) > MAX_LINE_BYTES:
            if not cutting:
                _emit(on_log, name, bytes(buffer))
                cutting = True
            buffer.clear()
    if buffer and not cutting:
        _emit(on_log, name, bytes(buffer))


def _emit(on_log: LogSink, name: str, line: bytes) -> None:
    text = line[:MAX_LINE_BYTES].decode("utf-8", "replace").rstrip("\r\n")
    if len(line) > MAX_LINE_BYTES:
        text += f" […line cut at {MAX_LINE_BYTES} bytes]"
    try:
        on_log(name, text)
    except Exception:
        logger.exception("the log sink failed on a %s line", name)
