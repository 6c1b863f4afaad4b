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
from collections.abc import Mapping
from pathlib import Path

from core.models import Invocation, Outcome
from core.ports import LogSink, ResolvedWorkflow
from dispatch.sandbox.serving import drain, forward_lines, send_request, serve, wait_until_ready

logger = logging.getLogger(__name__)

LAUNCHER = Path(__file__).parent / "inside" / "launcher.py"
MAX_SOCKET_PATH_BYTES = 107


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
            startup = self._startup_timeout

            async def request() -> Outcome:
                problem = await wait_until_ready(process, ready_pipe, startup)
                if problem is not None:
                    return Outcome.failure(problem)
                return await send_request(invocation, process, socket_path)

            return await serve(invocation, request)
        finally:
            await _end(process, readers, ready_pipe, socket_path, invocation.run_id)


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


def _prepare_socket_dir(socket_dir: Path, socket_path: Path) -> None:
    socket_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        socket_path.unlink()  # left by a run of this id that died with the server
