"""Run each workflow in a bubblewrap sandbox with its own cgroup (DESIGN §5, ``sandbox = "bwrap"``).

One run is one command line (:func:`sandbox_command`), or a child forked by its environment's
zygote (``zygote_pool.py``), or a kept process (``warm_pool.py``); all three are served by
``serving.serve`` and end in :meth:`SandboxedRun._end`::

    unshare --mount  sh: join the run's cgroups, set rlimits, bind the read-only sources   (root)
      └ setpriv --reuid <sandbox_uid> --no-new-privs                                       (drop)
          └ bwrap --unshare-user/pid/net/ipc/uts --die-with-parent --new-session …    (namespaces)
              └ <env>/bin/python launcher.py /workflow/main.py /run/switchboard/workflow.sock

What the sandbox sees and why: README "Sandbox"; figures: bench/RESULTS.md.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import logging
import os
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path

from core.models import Invocation, Outcome, WorkflowLimits
from core.ports import LogSink, ResolvedWorkflow
from dispatch.sandbox.bwrap import (
    CHAIN_ENV,
    LAUNCHER_PATH,
    RUN_ENV_FD,
    SOCKETS,
    WORK,
    WORKFLOW_DIR,
    RunDirectory,
    SandboxSettings,
    read_only_sources,
    relay_port,
    sandbox_command,
)
from dispatch.sandbox.cgroups import CgroupLimits, RunCgroup
from dispatch.sandbox.netfilter import filter_network
from dispatch.sandbox.runtime_relay import relay_runtime_api
from dispatch.sandbox.seccomp import run_filter
from dispatch.sandbox.serving import (
    RunProcess,
    drain,
    forward_lines,
    send_request,
    serve,
    wait_until_ready,
)
from dispatch.sandbox.spawn import memory_file, start_sandbox_process
from dispatch.sandbox.warm_pool import WARM_ENV, WarmCandidate, WarmPool, warm_key
from dispatch.sandbox.zygote_pool import (
    Zygote,
    ZygoteChild,
    ZygotePool,
    clone_trees,
    go_message,
    read_pipe,
    sender_pid,
)

logger = logging.getLogger(__name__)

SLIRP_READY_SECONDS = 10.0
KILL_GRACE_SECONDS = 1.0


class SandboxRunner:
    """Runs each invocation in a fresh bubblewrap sandbox with its own cgroup; a workflow that
    opted into warm reuse may be served by the kept process of an earlier run of the same
    version and owner instead (``warm_pool.py``)."""

    def __init__(
        self,
        settings: SandboxSettings,
        *,
        base_env: Mapping[str, str],
        zygotes: ZygotePool | None = None,
        warm: WarmPool | None = None,
        seccomp: bytes | None = None,
    ) -> None:
        self._settings = settings
        self._base_env = dict(base_env)
        self._runtime_uri = f"http://127.0.0.1:{relay_port(settings)}"
        self.zygotes = zygotes
        self.warm = warm
        self._reaping: set[asyncio.Task[int]] = set()
        self._seccomp = run_filter() if seccomp is None else seccomp

    async def close(self) -> None:
        """Tear down every warm process, then wait for the killed slirp4netns processes still
        exiting (see :meth:`SandboxedRun._end`)."""
        if self.warm is not None:
            await self.warm.close()
        await asyncio.gather(*self._reaping, return_exceptions=True)

    async def run(
        self, invocation: Invocation, workflow: ResolvedWorkflow, on_log: LogSink
    ) -> Outcome:
        if self.warm is None or not workflow.limits.warm:
            return await self._start(invocation, on_log, None, workflow=workflow)
        env = self._env(invocation, warm=True)

        async def start(first: Invocation, route: LogSink, candidate: WarmCandidate) -> Outcome:
            return await self._start(first, route, candidate, workflow=workflow)

        return await self.warm.run(invocation, warm_key(invocation, workflow, env), on_log, start)

    async def _start(
        self,
        invocation: Invocation,
        on_log: LogSink,
        candidate: WarmCandidate | None,
        *,
        workflow: ResolvedWorkflow,
    ) -> Outcome:
        """One run in a new sandbox; with a ``candidate``, its end may keep the process warm."""
        settings = self._settings
        limits = workflow.limits
        run_dir = RunDirectory(settings.runs_dir / invocation.run_id)
        cgroup = settings.cgroups.run_cgroup(invocation.run_id)
        sources = read_only_sources(workflow)
        relay: asyncio.Server | None = None
        try:
            await asyncio.to_thread(
                _prepare, run_dir, cgroup, settings, [s for s, _ in sources], limits
            )
            relay = await relay_runtime_api(run_dir.runtime_socket, settings.runtime_address)
            env = self._env(invocation, warm=candidate is not None)
            sandboxed = SandboxedRun(invocation, workflow, run_dir, cgroup, sources, env)
            sandboxed.reaping = self._reaping
            if candidate is not None and self.warm is not None:
                sandboxed.warm = (self.warm, candidate)
            sandboxed.seccomp = self._seccomp
            if self.zygotes is not None:
                # A kept process is the zygote's child: the zygote stays acquired (not evicted)
                # until the process is torn down.
                zygote = await self.zygotes.acquire(workflow.python)
                if zygote is not None:
                    try:
                        return await sandboxed.run(settings, on_log, zygote)
                    finally:
                        self.zygotes.release(zygote)
            return await sandboxed.run(settings, on_log)
        finally:
            if relay is not None:
                relay.close()
            await asyncio.to_thread(_clean_up, run_dir, cgroup)

    def _env(self, invocation: Invocation, *, warm: bool = False) -> dict[str, str]:
        return {
            **self._base_env,
            **invocation.env,
            "HOME": WORK,
            "TMPDIR": "/tmp",  # noqa: S108 - the sandbox's own tmpfs
            "CODEWORDS_RUNTIME_URI": self._runtime_uri,
            "RUNTIME_URI": self._runtime_uri,
            "CODEWORDS_SERVICE_ROOT": WORKFLOW_DIR,
            **({WARM_ENV: "1"} if warm else {}),
        }


class SandboxedRun:
    """One sandboxed process from start to end: network, limits, request, kill."""

    def __init__(
        self,
        invocation: Invocation,
        workflow: ResolvedWorkflow,
        run_dir: RunDirectory,
        cgroup: RunCgroup,
        sources: Sequence[tuple[Path, str]],
        env: dict[str, str],
    ) -> None:
        self.invocation = invocation
        self.workflow = workflow
        self.limits = workflow.limits
        self.run_dir = run_dir
        self.cgroup = cgroup
        self.sources = sources
        self.env = env
        self.slirp: asyncio.subprocess.Process | None = None
        self.slirp_exit: int | None = None
        self.reaping: set[asyncio.Task[int]] | None = None
        self.warm: tuple[WarmPool, WarmCandidate] | None = None
        """warm reuse: called at the end, before the teardown (``warm_pool.py``)"""
        self.outcome: Outcome | None = None
        self.seccomp = b""
        """the BPF program every process of the run is confined by (``seccomp.py``)"""

    async def run(
        self, settings: SandboxSettings, on_log: LogSink, zygote: Zygote | None = None
    ) -> Outcome:
        if zygote is not None:
            return await self._run_forked(settings, on_log, zygote)
        internet = self.limits.network == "internet"
        pipes = _Pipes(internet)
        inner = [
            str(self.workflow.python),
            LAUNCHER_PATH,
            f"{WORKFLOW_DIR}/{self.workflow.source_path.name}",
            f"{SOCKETS}/workflow.sock",
            str(pipes.ready_write),
            "-",
            f"{relay_port(settings)}:{SOCKETS}/runtime.sock",
        ]
        if pipes.netns_write is not None and pipes.go_read is not None:
            inner.append(f"{pipes.netns_write}:{pipes.go_read}")
        seccomp = memory_file(self.seccomp, "switchboard-seccomp")
        environment = memory_file(json.dumps(self.env).encode(), "switchboard-run-env")
        argv = sandbox_command(
            run_dir=self.run_dir,
            sources=self.sources,
            cgroup_procs=self.cgroup.procs_files,
            limits=self.limits,
            uid=settings.uid,
            inner_command=inner,
            info_fd=pipes.info_write,
            seccomp_fd=seccomp,
        )
        try:
            process = await start_sandbox_process(
                argv,
                env={**CHAIN_ENV, RUN_ENV_FD: str(environment)},
                pass_fds=(*pipes.child_ends(), seccomp, environment),
            )
        except OSError as exc:
            pipes.close()
            return Outcome.failure(f"could not start the sandbox: {exc.strerror or exc}")
        finally:
            pipes.close_child_ends()
            os.close(seccomp)
            os.close(environment)
        run_id = self.invocation.run_id
        logger.info("run %s: sandbox started as pid %s", run_id, process.pid)
        readers = [
            asyncio.create_task(forward_lines(process.stdout, "stdout", on_log)),
            asyncio.create_task(forward_lines(process.stderr, "stderr", on_log)),
        ]
        try:
            return await self._supervise(settings, process, pipes)
        finally:
            await self._end(process, readers, pipes)

    async def _supervise(
        self, settings: SandboxSettings, process: RunProcess, pipes: _Pipes
    ) -> Outcome:
        """Serve the request while watching the limits; noted for :meth:`_end`'s keeping."""

        async def request() -> Outcome:
            if isinstance(process, ZygoteChild):
                problem = await self._place(settings, process)
            elif pipes.info_read is not None:
                problem = await self._connect_internet(settings, pipes)
            else:
                problem = None
            if problem is None:
                problem = await wait_until_ready(process, pipes.ready, settings.startup_timeout)
            if problem is not None:
                return Outcome.failure(problem)
            return await send_request(self.invocation, process, self.run_dir.workflow_socket)

        self.outcome = await serve(self.invocation, request, (self.cgroup, self.limits))
        return self.outcome

    async def _connect_internet(self, settings: SandboxSettings, pipes: _Pipes) -> str | None:
        """Attach slirp4netns to the sandbox's network namespace, then let the sandbox go on."""
        if pipes.info_read is None or pipes.netns_read is None or pipes.go_write is None:
            raise RuntimeError("the sandbox was started without its network pipes")
        info = await asyncio.to_thread(_read_json, pipes.info_read)
        child = info.get("child-pid")
        if not isinstance(child, int):
            return "the sandbox did not start (no child pid from bwrap)"
        if await asyncio.to_thread(os.read, pipes.netns_read, 1) != b"1":
            return "the sandbox ended before its network was connected; see the run's logs"
        problem = await self._attach_slirp(settings, child)
        if problem is not None:
            return problem
        try:
            os.write(pipes.go_write, b"1")
        except BrokenPipeError:
            return "the sandbox ended before its network was connected; see the run's logs"
        return None

    async def _place(self, settings: SandboxSettings, child: ZygoteChild) -> str | None:
        """Put a zygote's child in the run's cgroup (and on the internet) before it goes on."""
        procs = self.cgroup.procs_files
        joining: asyncio.Task[None] | None = None
        try:
            async with asyncio.timeout(settings.startup_timeout):
                keeper = await sender_pid(child.handshake, b"k")
                if keeper is not None:
                    # The keeper (see inside/zygote_server.py) joins while it makes the namespaces:
                    # a v1 cgroup move costs an RCU grace period; the move of pid 1 right after
                    # is then quick. Pid 1 forked after the keeper joined is in by inheritance.
                    joining = asyncio.create_task(asyncio.to_thread(_join, procs, keeper))
                    pid = await sender_pid(child.handshake, b"p")
                    await joining
                else:
                    pid = None
        except (TimeoutError, OSError):  # OSError: the keeper died before it could join
            pid = None
        finally:
            if joining is not None and not joining.done():
                joining.cancel()
                await asyncio.gather(joining, return_exceptions=True)
        if pid is None:
            return "the sandbox did not start; see the run's logs"
        child.pid = pid
        await asyncio.to_thread(_join, procs, pid)
        if self.limits.network == "internet":
            problem = await self._attach_slirp(settings, pid)
            if problem is not None:
                return problem
        try:
            # "go" carries the run's environment (its keys and the user's secrets): only the
            # run's own pid 1 reads it, never the zygote it was forked from.
            loop = asyncio.get_running_loop()
            await loop.sock_sendall(child.handshake, go_message(self.env))
        except OSError:
            return "the sandbox ended before it was placed in its cgroup; see the run's logs"
        return None

    async def _attach_slirp(self, settings: SandboxSettings, child: int) -> str | None:
        """Filter the run's network (``netfilter.py``) and connect slirp4netns to it,
        side by side (nft takes ≈ 15 ms): both are done before the run is told to go, and
        nothing of the workflow runs before that."""
        filtering = asyncio.create_task(filter_network(child, settings.network_allow))
        try:
            connected = await self._start_slirp(child)
        except BaseException:
            filtering.cancel()
            await asyncio.gather(filtering, return_exceptions=True)
            raise
        filtered = await filtering
        return filtered or connected

    async def _start_slirp(self, child: int) -> str | None:
        ready_read, ready_write = os.pipe()
        # slirp4netns exits when the write end of this pipe closes: at the end of the run, and
        # also when the server dies without ending it (the kernel closes the server's fds), so a
        # crash leaves no slirp4netns behind holding a dead run's network namespace.
        exit_read, self.slirp_exit = os.pipe()
        try:
            # As root, by netns path: given a pid, slirp4netns would first join that process's
            # user namespace, which for --disable-userns is a nested one that does not own the
            # network namespace (EPERM), and the sandbox uid cannot enter the outer one from
            # outside. slirp4netns confines itself (--enable-sandbox: empty root, no
            # capabilities; --enable-seccomp).
            self.slirp = await asyncio.create_subprocess_exec(
                "slirp4netns", "--configure", "--mtu=65520", "--disable-host-loopback",
                "--enable-sandbox", "--enable-seccomp", f"--ready-fd={ready_write}",
                f"--exit-fd={exit_read}", "--netns-type=path", f"/proc/{child}/ns/net", "tap0",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                pass_fds=(ready_write, exit_read),
                env=CHAIN_ENV,  # not the server's: its settings may carry secrets
                start_new_session=True,
            )  # fmt: skip
        finally:
            os.close(ready_write)
            os.close(exit_read)
        try:
            async with asyncio.timeout(SLIRP_READY_SECONDS):
                ready = await asyncio.to_thread(os.read, ready_read, 1)
        finally:
            os.close(ready_read)
        if ready != b"1":
            stderr = b""
            if self.slirp.stderr is not None:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1):
                        stderr = await self.slirp.stderr.read()
            return f"could not connect the sandbox to the internet: {stderr.decode().strip()}"
        return None

    async def _run_forked(
        self, settings: SandboxSettings, on_log: LogSink, zygote: Zygote
    ) -> Outcome:
        """The run as a child of its environment's zygote (``inside/zygote_server.py``)."""
        pipes = _Pipes(internet=False)
        out_read, out_write = os.pipe()
        err_read, err_write = os.pipe()
        status_read, status_write = os.pipe()
        ours, theirs = socket.socketpair()
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        ours.setblocking(False)
        trees: list[int] = []
        unread = [out_read, err_read, status_read]
        """read ends not yet handed to a stream (``read_pipe`` owns, and closes, what it takes)"""
        transports: list[asyncio.BaseTransport] = []
        child: ZygoteChild | None = None
        readers: list[asyncio.Task[None]] = []
        try:
            try:
                run_dir, source = self.run_dir, self.workflow.source_path
                sources = (run_dir.work, run_dir.sockets, source.parent)
                trees += await asyncio.to_thread(clone_trees, sources)
                limits = self.limits
                # No "env" here: the zygote never sees a run's secrets. Pid 1 of the run reads
                # its environment from the handshake, after it was forked (see _place).
                header = {
                    "network": limits.network,
                    "workflow_file": f"{WORKFLOW_DIR}/{source.name}",
                    "open_files": limits.open_files,
                    "file_size": limits.file_size,
                    "tmp_size": limits.tmp_size,
                    "relay_port": relay_port(settings),
                    "seccomp": base64.b64encode(self.seccomp).decode("ascii"),
                }
                ends = (out_write, err_write, pipes.ready_write, status_write, theirs.fileno())
                await zygote.fork(header, [*ends, *trees])
            except OSError as exc:
                return Outcome.failure(f"could not start the sandbox: {exc.strerror or exc}")
            finally:
                for fd in (out_write, err_write, status_write, *trees):
                    os.close(fd)
                theirs.close()
                pipes.close_child_ends()
            streams = []
            while unread:
                stream, transport = await read_pipe(unread.pop(0))
                streams.append(stream)
                transports.append(transport)
            stdout, stderr, status = streams
            child = ZygoteChild(status, ours)
            readers = [
                asyncio.create_task(forward_lines(stdout, "stdout", on_log)),
                asyncio.create_task(forward_lines(stderr, "stderr", on_log)),
            ]
            return await self._supervise(settings, child, pipes)
        finally:
            # Also when cancelled (a cancel, a lost lease) before the child was seen: a child
            # the zygote forked meanwhile waits on the handshake to be placed, and gives up
            # when ``ours`` closes (``ZygoteChild.kill``); nothing of it is left running.
            if child is not None:
                await self._end(child, readers, pipes)
            else:
                pipes.close()
            ours.close()
            for fd in unread:
                os.close(fd)
            for transport in transports:
                transport.close()

    async def _end(
        self,
        process: RunProcess,
        readers: list[asyncio.Task[None]],
        pipes: _Pipes,
    ) -> None:
        """Kill everything in the run's cgroup (and slirp4netns), collect the last output. A
        warm-capable run's process may first be kept, idle, until its pool retires it."""
        try:
            if self.warm is not None:
                pool, candidate = self.warm
                socket_path = self.run_dir.workflow_socket
                await pool.park(candidate, self.outcome, process, self.cgroup, socket_path)
        finally:
            await self._tear_down(process, readers, pipes)

    async def _tear_down(
        self,
        process: RunProcess,
        readers: list[asyncio.Task[None]],
        pipes: _Pipes,
    ) -> None:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        if self.slirp is not None:
            with contextlib.suppress(ProcessLookupError):
                self.slirp.kill()
        if self.slirp_exit is not None:
            os.close(self.slirp_exit)
            self.slirp_exit = None
        try:
            # Kill the whole cgroup, then wait for the exit the kill causes (an event: the
            # status pipe or the process), and only then empty and remove the cgroup: its
            # emptiness is polled, and polled right after the kill it never is yet.
            await asyncio.to_thread(self.cgroup.kill)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(KILL_GRACE_SECONDS):
                    await process.wait()
            await asyncio.to_thread(self.cgroup.destroy)
            await process.wait()
            if self.slirp is not None:
                # SIGKILLed above; its exit unregisters the tap device, which waits for an RCU
                # grace period or two (≈ 20 ms) in the kernel. Reaped in the background, owned
                # by the runner (``SandboxRunner.close`` waits for it).
                if self.reaping is None:
                    await self.slirp.wait()
                else:
                    reaping = asyncio.create_task(self.slirp.wait())
                    self.reaping.add(reaping)
                    reaping.add_done_callback(self.reaping.discard)
        finally:
            await drain(readers, self.invocation.run_id)
            pipes.close()
        logger.info("run %s: sandbox ended (code %s)", self.invocation.run_id, process.returncode)


class _Pipes:
    """Pipes between server and sandbox: ready (always); info, netns and go (``internet``)."""

    def __init__(self, internet: bool) -> None:
        ready_read, self.ready_write = os.pipe()
        self.ready = io.FileIO(ready_read, "rb")
        self.info_read: int | None = None
        self.info_write: int | None = None
        self.netns_read: int | None = None
        self.netns_write: int | None = None
        self.go_read: int | None = None
        self.go_write: int | None = None
        if internet:
            self.info_read, self.info_write = os.pipe()
            self.netns_read, self.netns_write = os.pipe()
            self.go_read, self.go_write = os.pipe()
        self._child_ends = [
            fd
            for fd in (self.ready_write, self.info_write, self.netns_write, self.go_read)
            if fd is not None
        ]

    def child_ends(self) -> tuple[int, ...]:
        return tuple(self._child_ends)

    def close_child_ends(self) -> None:
        for fd in self._child_ends:
            os.close(fd)
        self._child_ends = []

    def close(self) -> None:
        self.close_child_ends()
        self.ready.close()
        for fd in (self.info_read, self.netns_read, self.go_write):
            if fd is not None:
                os.close(fd)
        self.info_read = self.netns_read = self.go_write = None


def _read_json(fd: int) -> dict[str, object]:
    """bwrap's ``--info-fd`` document (it closes the pipe after writing it)."""
    chunks = []
    while chunk := os.read(fd, 4096):
        chunks.append(chunk)
        if chunks and b"}" in chunk:
            break
    try:
        parsed = json.loads(b"".join(chunks) or b"{}")
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _prepare(
    run_dir: RunDirectory,
    cgroup: RunCgroup,
    settings: SandboxSettings,
    sources: Sequence[Path],
    limits: WorkflowLimits,
) -> None:
    if run_dir.path.exists():  # left by a run of this id that died with an earlier server
        _clean_up(run_dir, cgroup)
    run_dir.create(settings.uid, sources, limits.network)
    cgroup.create(CgroupLimits(memory=limits.memory, pids=limits.pids, cpu=limits.cpu))


def _join(procs_files: Sequence[Path], pid: int) -> None:
    for procs in procs_files:
        procs.write_text(str(pid), encoding="ascii")


def _clean_up(run_dir: RunDirectory, cgroup: RunCgroup) -> None:
    cgroup.destroy()
    run_dir.remove()
