"""Start a sandbox's first process with exactly the descriptors it is given, on any event loop.

uvloop (what ``switchboard serve`` runs on) does not implement ``close_fds``: a subprocess it starts
inherits every inheritable descriptor of the server, such as one the server inherited from
whatever started it (a shell's, a supervisor's socket). ``subprocess.Popen`` closes all but
``pass_fds`` in the child; :class:`SandboxProcess` wraps it as the runners use asyncio's
``Process``: ``pid``, ``stdout``/``stderr`` streams, ``wait``, ``kill``, ``returncode``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence


class SandboxProcess:
    """A started process; its exit is seen on a pidfd, so no thread waits for it."""

    def __init__(
        self,
        popen: subprocess.Popen[bytes],
        stdout: asyncio.StreamReader,
        stderr: asyncio.StreamReader,
        exited: asyncio.Future[int],
    ) -> None:
        self._popen = popen
        self.stdout = stdout
        self.stderr = stderr
        self._exited = exited

    @property
    def pid(self) -> int:
        return self._popen.pid

    @property
    def returncode(self) -> int | None:
        return self._exited.result() if self._exited.done() else None

    async def wait(self) -> int:
        return await asyncio.shield(self._exited)

    def kill(self) -> None:
        if not self._exited.done():  # not reaped yet, so the pid is still this process's
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._popen.pid, signal.SIGKILL)


async def start_sandbox_process(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    pass_fds: Sequence[int] = (),
    cwd: str | None = None,
) -> SandboxProcess:
    """Start ``argv`` in a new session, stdin ``/dev/null``, stdout and stderr piped to us, and
    no descriptor of ours but ``pass_fds``. Raises OSError as ``create_subprocess_exec`` does."""
    loop = asyncio.get_running_loop()
    out_read, out_write = os.pipe()
    err_read, err_write = os.pipe()
    try:
        # Returns once the child has exec'd (a few ms), as asyncio's own subprocess_exec does
        # in the loop's thread; the argv is built by dispatch/sandbox/bwrap.py.
        popen = subprocess.Popen(  # noqa: S603, ASYNC220
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out_write,
            stderr=err_write,
            env=dict(env),
            pass_fds=tuple(pass_fds),
            close_fds=True,
            start_new_session=True,
            cwd=cwd,
        )
    except BaseException:
        os.close(out_read)
        os.close(err_read)
        raise
    finally:
        os.close(out_write)
        os.close(err_write)
    exited: asyncio.Future[int] = loop.create_future()
    pidfd = os.pidfd_open(popen.pid)

    def reap() -> None:
        loop.remove_reader(pidfd)
        os.close(pidfd)
        if not exited.done():
            exited.set_result(popen.wait())

    loop.add_reader(pidfd, reap)
    return SandboxProcess(popen, await _reader(out_read), await _reader(err_read), exited)


class _PipeProtocol(asyncio.StreamReaderProtocol):
    def eof_received(self) -> bool:
        """At end of file the pipe's transport closes (asyncio's always does; uvloop's stays
        open when the protocol asks to, as a stream's protocol does)."""
        super().eof_received()
        return False


async def _reader(fd: int) -> asyncio.StreamReader:
    """A stream over the read end of a pipe, closed at its end of file."""
    reader = asyncio.StreamReader()
    await asyncio.get_running_loop().connect_read_pipe(
        lambda: _PipeProtocol(reader), os.fdopen(fd, "rb", buffering=0)
    )
    return reader


def memory_file(data: bytes, name: str) -> int:
    """A descriptor of an anonymous file holding ``data`` at offset 0, to hand a sandbox with
    ``pass_fds`` (its seccomp program, its environment); the caller closes it once started."""
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    try:
        os.write(fd, data)
        os.lseek(fd, 0, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return fd
