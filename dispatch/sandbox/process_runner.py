"""Run a workflow as a plain child process: the unisolated :class:`~core.ports.WorkflowRunner`.

Each run gets its own process (started by ``inside/launcher.py`` with the environment's
interpreter) serving the workflow on a private Unix socket, one HTTP request over that socket, and
a SIGKILL to the process group at the end whatever happened. It gives no isolation beyond the
process group (DESIGN §5 ``sandbox = "process"``, for development); a sandboxed runner replaces it
behind the same port. A child that leaves the group (``setsid``) escapes this cleanup: only the
sandbox's cgroup catches those.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import signal
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Literal, Protocol

import httpx

from core.models import Invocation, Outcome
from core.ports import LogSink, ResolvedWorkflow

logger = logging.getLogger(__name__)

LAUNCHER = Path(__file__).parent / "inside" / "launcher.py"
MAX_LINE_BYTES = 16 * 1024
MAX_SOCKET_PATH_BYTES = 107
DRAIN_SECONDS = 2.0
"""How long the rest of a killed workflow's output may take to arrive before it is dropped."""
CRASH_EXIT_GRACE_SECONDS = 5.0
"""How long to wait for the exit code of a workflow that dropped the connection mid-request."""


class ProcessRunner:
    """Runs each invocation in a fresh process group of the workflow's environment."""

    def __init__(
        self, *, socket_dir: Path, startup_timeout: float, base_env: Mapping[str, str]
    ) -> None:
        self._socket_dir = socket_dir
        self._startup_timeout = startup_timeout
        self._base_env = dict(base_env)

    async def run(
        self, invocation: Invocation, workflow: ResolvedWorkflow, on_log: LogSink
    ) -> Outcome:
        socket_path = self._socket_dir / f"{invocation.run_id}.sock"
        if len(os.fsencode(socket_path)) > MAX_SOCKET_PATH_BYTES:
            return Outcome.failure(
                f"the socket path {socket_path} is longer than {MAX_SOCKET_PATH_BYTES} bytes; "
                "configure a shorter data directory"
            )
        await asyncio.to_thread(_prepare_socket_dir, self._socket_dir, socket_path)
        ready_read, ready_write = os.pipe()
        try:
            process = await asyncio.create_subprocess_exec(
                str(workflow.python),
                str(LAUNCHER),
                str(workflow.source_path),
                str(socket_path),
                str(ready_write),
                str(os.getpid()),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env={**self._base_env, **invocation.env},
                cwd=workflow.source_path.parent,
                start_new_session=True,
                pass_fds=(ready_write,),
            )
        except OSError as exc:
            os.close(ready_read)
            logger.error("run %s: cannot start %s: %s", invocation.run_id, workflow.python, exc)
            return Outcome.failure(f"could not start the workflow process: {exc.strerror or exc}")
        except BaseException:
            os.close(ready_read)
            raise
        finally:
            os.close(ready_write)  # the child holds its copy; ours would hide the child's exit
        logger.info(
            "run %s: started %s v%s as pid %s",
            invocation.run_id,
            workflow.service_id,
            workflow.version,
            process.pid,
        )
        if process.stdout is None or process.stderr is None:  # pragma: no cover - both are PIPEs
            raise RuntimeError("the workflow process has no output pipes")
        readers = [
            asyncio.create_task(forward_lines(process.stdout, "stdout", on_log)),
            asyncio.create_task(forward_lines(process.stderr, "stderr", on_log)),
        ]
        ready_pipe = io.FileIO(ready_read, "rb")
        try:
            return await self._serve_one_request(invocation, process, ready_pipe, socket_path)
        finally:
            await _end(process, readers, ready_pipe, socket_path, invocation.run_id)

    async def _serve_one_request(
        self,
        invocation: Invocation,
        process: asyncio.subprocess.Process,
        ready_pipe: io.FileIO,
        socket_path: Path,
    ) -> Outcome:
        deadline = asyncio.timeout(invocation.timeout)
        try:
            async with deadline:
                problem = await wait_until_ready(process, ready_pipe, self._startup_timeout)
                if problem is not None:
                    return Outcome.failure(problem)
                return await send_request(invocation, process, socket_path)
        except TimeoutError:
            if not deadline.expired():
                raise
            logger.info("run %s: timed out after %g s", invocation.run_id, invocation.timeout)
            return Outcome.failure(f"timed out after {invocation.timeout:g} s", timed_out=True)


class Exiting(Protocol):
    """A workflow's process as far as serving one request needs it."""

    async def wait(self) -> int: ...


async def wait_until_ready(
    process: Exiting, ready_pipe: io.FileIO, startup_timeout: float
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


async def send_request(invocation: Invocation, process: Exiting, socket_path: Path) -> Outcome:
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


async def _end(
    process: asyncio.subprocess.Process,
    readers: list[asyncio.Task[None]],
    ready_pipe: io.FileIO,
    socket_path: Path,
    run_id: str,
) -> None:
    """Kill the run's process group, collect its last output, remove its socket."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    try:
        await process.wait()
    finally:
        await drain(readers, run_id)
        ready_pipe.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(socket_path)  # no thread hop: this must not be interrupted by cancellation
    logger.info("run %s: process %s ended (code %s)", run_id, process.pid, process.returncode)


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


def _prepare_socket_dir(socket_dir: Path, socket_path: Path) -> None:
    socket_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        socket_path.unlink()  # left by a run of this id that died with the server
