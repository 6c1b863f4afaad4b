"""Zygotes on the server side: one per environment, started lazily, LRU-capped (DESIGN §5 speed).

A zygote (``inside/zygote_server.py``) has imported FastAPI, pydantic and uvicorn once; forking it
costs a few milliseconds where a fresh interpreter costs ≈ 400 ms. It holds nothing of any run:
per run the server sends it the run's environment and file descriptors (never argv), including
the run's directories as detached mount trees (``open_tree``), so the zygote's own mount view has
no run directory at all and each child sees only its own. A zygote is keyed by the environment's
interpreter and restarted when the environment's directory changes (a rebuilt environment); it
stops when evicted (only idle ones) or when the server stops.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import ctypes
import json
import logging
import os
import shutil
import signal
import socket
import struct
import uuid
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from dispatch.sandbox.bwrap import (
    CHAIN_ENV,
    LAUNCHER_PATH,
    ZYGOTE,
    ZYGOTE_PATH,
    RunDirectory,
    SandboxSettings,
    base_interpreter_prefix,
    zygote_command,
)
from dispatch.sandbox.process_runner import LAUNCHER
from dispatch.sandbox.serving import forward_lines
from dispatch.sandbox.spawn import SandboxProcess, start_sandbox_process

logger = logging.getLogger(__name__)

SYS_OPEN_TREE = 428
OPEN_TREE_CLONE = 0x1
OPEN_TREE_CLOEXEC = os.O_CLOEXEC
AT_RECURSIVE = 0x8000
STOP_SECONDS = 5.0

_libc = ctypes.CDLL(None, use_errno=True)


def clone_tree(path: Path) -> int:
    """A detached copy of the mount at ``path`` (a file descriptor to hand to a zygote child)."""
    fd = int(
        _libc.syscall(SYS_OPEN_TREE, -100, os.fsencode(path), OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC)
    )
    if fd < 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"open_tree {path}: {os.strerror(errno)}")
    return fd


def clone_trees(paths: Sequence[Path]) -> list[int]:
    """:func:`clone_tree` of each path, all or none: if one fails, the clones made are closed."""
    fds: list[int] = []
    try:
        for path in paths:
            fds.append(clone_tree(path))  # noqa: PERF401 - a loop keeps the partial list
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return fds


@dataclass(frozen=True, slots=True)
class ZygoteKey:
    python: Path
    fingerprint: tuple[int, int]
    """inode and mtime of the environment's directory: a rebuilt environment changes them"""


def zygote_key(python: Path) -> ZygoteKey:
    env = python.parent.parent
    stat = env.stat()
    return ZygoteKey(python, (stat.st_ino, stat.st_mtime_ns))


class Zygote:
    """One running zygote: its sandbox process and the control socket to it."""

    def __init__(
        self,
        key: ZygoteKey,
        process: SandboxProcess,
        control: socket.socket,
        directory: RunDirectory,
    ) -> None:
        self.key = key
        self.process = process
        self.control = control
        self.directory = directory
        self.active = 0
        self._readers = [
            asyncio.create_task(forward_lines(stream, name, self._log))  # type: ignore[arg-type]
            for name, stream in (("stdout", process.stdout), ("stderr", process.stderr))
        ]

    def _log(self, stream: str, line: str) -> None:
        logger.warning("zygote of %s (%s): %s", self.key.python, stream, line)

    @property
    def alive(self) -> bool:
        return self.process.returncode is None

    async def fork(self, header: Mapping[str, object], fds: Sequence[int]) -> None:
        """Ask for one run's child: its environment travels here, never in argv."""
        message = json.dumps(header).encode()
        ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
        sending = asyncio.ensure_future(
            asyncio.to_thread(self.control.sendmsg, [message], ancillary)
        )
        try:
            await asyncio.shield(sending)
        except asyncio.CancelledError:
            # The thread still passes ``fds``: were they closed now, their numbers could be
            # reused for a host file before it sends them. Return only once it let go.
            await asyncio.gather(sending, return_exceptions=True)
            raise

    async def stop(self) -> None:
        """Close the control socket: the zygote exits once its children are done; then kill."""
        self.control.close()
        try:
            async with asyncio.timeout(STOP_SECONDS):
                await self.process.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            await self.process.wait()
        await asyncio.gather(*self._readers, return_exceptions=True)
        await asyncio.to_thread(shutil.rmtree, self.directory.path, True)


class ZygotePool:
    """Zygotes by environment; at most ``settings.zygote_cap`` idle ones are kept."""

    def __init__(self, settings: SandboxSettings, zygotes_dir: Path) -> None:
        self._settings = settings
        self._dir = zygotes_dir
        self._zygotes: OrderedDict[Path, Zygote] = OrderedDict()
        self._lock = asyncio.Lock()
        self._retiring: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self._zygotes)

    def sweep(self) -> None:
        """Remove the zygote directories a crashed server of this data dir left (blocking: call
        it at start, before the first zygote)."""
        if self._dir.is_dir():
            for stale in self._dir.iterdir():
                logger.warning("removing the stale zygote directory %s", stale)
                shutil.rmtree(stale, ignore_errors=True)

    async def acquire(self, python: Path) -> Zygote | None:
        """The zygote of this interpreter's environment, started if need be; None if it cannot
        start (the caller falls back to a fresh process). Release it with :meth:`release`."""
        key = await asyncio.to_thread(zygote_key, python)
        async with self._lock:
            zygote = self._zygotes.get(python)
            if zygote is not None and (zygote.key != key or not zygote.alive):
                del self._zygotes[python]
                logger.info("restarting the zygote of %s (environment changed or exited)", python)
                self._retire(zygote)
                zygote = None
            if zygote is None:
                zygote = await self._start(key)
                if zygote is None:
                    return None
                self._zygotes[python] = zygote
            self._zygotes.move_to_end(python)
            zygote.active += 1
            await self._evict()
            return zygote

    def release(self, zygote: Zygote) -> None:
        zygote.active -= 1

    async def close(self) -> None:
        async with self._lock:
            zygotes = list(self._zygotes.values())
            self._zygotes.clear()
        await asyncio.gather(*(z.stop() for z in zygotes), *self._retiring)
        with contextlib.suppress(OSError):
            self._dir.rmdir()

    def _retire(self, zygote: Zygote) -> None:
        """Stop a zygote in the background: its running children finish first."""
        task = asyncio.create_task(zygote.stop())
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def _evict(self) -> None:
        idle = [p for p, z in self._zygotes.items() if z.active == 0]
        while len(self._zygotes) > self._settings.zygote_cap and idle:
            python = idle.pop(0)
            self._retire(self._zygotes.pop(python))

    async def _start(self, key: ZygoteKey) -> Zygote | None:
        settings = self._settings
        env = key.python.parent.parent
        sources = [(env, str(env))]
        interpreter = base_interpreter_prefix(env)
        if interpreter is not None and not interpreter.is_relative_to("/usr"):
            sources.append((interpreter, str(interpreter)))
        sources += [(LAUNCHER, LAUNCHER_PATH), (ZYGOTE, ZYGOTE_PATH)]
        directory = RunDirectory(self._dir / f"zygote-{uuid.uuid4().hex[:12]}")

        def prepare() -> None:
            self._dir.mkdir(mode=0o711, exist_ok=True)
            directory.create(settings.uid, [s for s, _ in sources], "zygote")

        await asyncio.to_thread(prepare)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        argv = zygote_command(
            zygote_dir=directory,
            sources=sources,
            uid=settings.uid,
            command=[str(key.python), ZYGOTE_PATH, str(theirs.fileno())],
        )
        try:
            process = await start_sandbox_process(
                argv,
                env=CHAIN_ENV,
                pass_fds=(theirs.fileno(),),
                cwd="/",
            )
        except OSError as exc:
            logger.error("cannot start a zygote for %s: %s", key.python, exc)
            ours.close()
            return None
        finally:
            theirs.close()
        zygote = Zygote(key, process, ours, directory)
        try:
            async with asyncio.timeout(settings.startup_timeout):
                said = await asyncio.to_thread(ours.recv, 16)
        except TimeoutError:
            said = b""
        except asyncio.CancelledError:  # the run that asked for it was cancelled: no orphan
            await zygote.stop()
            raise
        if said != b"ready":
            logger.error("the zygote of %s did not start; runs use fresh processes", key.python)
            await zygote.stop()
            return None
        logger.info("zygote of %s started as pid %s", key.python, process.pid)
        return zygote


async def sender_pid(channel: socket.socket, expected: bytes) -> int | None:
    """Read one byte (None unless it is ``expected``) and the host pid of the process that sent
    it (``SO_PASSCRED``: the kernel translates the sender's pid into ours, whatever pid namespace
    it is in)."""
    loop = asyncio.get_running_loop()
    readable = loop.create_future()
    loop.add_reader(channel.fileno(), readable.set_result, None)
    try:
        await readable
    finally:
        loop.remove_reader(channel.fileno())
    data, ancillary, _, _ = channel.recvmsg(1, socket.CMSG_SPACE(struct.calcsize("3i")))
    if data != expected:
        return None
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
            pid, _, _ = struct.unpack("3i", payload[: struct.calcsize("3i")])
            return int(pid)
    return None


def go_message(env: Mapping[str, str]) -> bytes:
    """The handshake's last message to a run's pid 1: ``g``, then its environment as JSON behind
    a 4-byte big-endian length (read by ``inside/zygote_server.py`` :func:`receive_environment`)."""
    body = json.dumps(dict(env)).encode()
    return b"g" + struct.pack("!I", len(body)) + body


class ZygoteChild:
    """One run forked by a zygote, seen like a process: ``pid`` (host, once placed), ``wait``."""

    def __init__(self, status: asyncio.StreamReader, handshake: socket.socket) -> None:
        self.pid: int | None = None
        self.returncode: int | None = None
        self.handshake = handshake
        self._status = status

    async def wait(self) -> int:
        if self.returncode is None:
            line = await self._status.readline()
            try:
                self.returncode = int(line)
            except ValueError:  # the keeper was killed with the zygote
                self.returncode = -9
        return self.returncode

    def kill(self) -> None:
        self.handshake.close()  # a child still waiting to be placed gives up
        if self.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)


async def read_pipe(fd: int) -> tuple[asyncio.StreamReader, asyncio.BaseTransport]:
    """A stream over the read end of a pipe, without a thread; close the transport at the end."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", buffering=0)
    )
    return reader, transport
