"""Run each workflow in a bubblewrap sandbox with its own cgroup (DESIGN §5, ``sandbox = "bwrap"``).

One run is one command line, built by :func:`sandbox_command` and started from the server::

    unshare --mount  sh: join the run's cgroups, set rlimits, bind the read-only sources   (root)
      └ setpriv --reuid <sandbox_uid> --no-new-privs                                       (drop)
          └ bwrap --unshare-user/pid/net/ipc/uts --die-with-parent --new-session …    (namespaces)
              └ <env>/bin/python launcher.py /workflow/main.py /run/switchboard/workflow.sock

Why each step:

- The sandbox runs as an unprivileged host uid (``sandbox_uid``, inside it uid 1000): never host
  root, so even a file bwrap would expose by mistake is checked against an ordinary user. That
  user cannot traverse the server's private directories (``/root/.pyenv``, a 0700 data dir), so a
  private mount namespace made as root first bind-mounts the interpreter, the environment, the
  workflow's directory and the launcher onto mount points inside the run directory; bwrap then
  binds those read-only. Nothing else of the host is visible: ``/usr`` read-only, a few generated
  files in ``/etc``, fresh ``/proc``, minimal ``/dev``, a size-limited tmpfs ``/tmp``, the run's
  writable ``/run/work`` (``HOME``) and ``/run/switchboard`` (its sockets).
- The cgroup is joined by the shell before anything forks, so every process of the run, including
  a ``setsid`` double-fork, is in it; limits are memory (swap 0), pids and CPU; the end of a run
  kills the cgroup and removes it (``dispatch/cgroups.py``). rlimits back it up: ``NOFILE``,
  ``FSIZE``, ``CORE=0`` (not ``RLIMIT_AS``: it breaks runtimes that reserve address space).
- Network: always a private network namespace. ``none`` has only loopback; ``internet`` adds
  slirp4netns with ``--disable-host-loopback`` (the host's 127.0.0.1 stays out of reach), attached
  before the workflow is loaded: bwrap's ``--info-fd`` names the namespace, the launcher says when
  bwrap is done with it (attaching earlier races bwrap's own loopback setup) and waits for a go.
  Either way the launcher relays ``127.0.0.1:<server port>`` to ``/run/switchboard/runtime.sock``,
  which the server relays to its own listener, so ``CODEWORDS_RUNTIME_URI`` and signed file URIs
  of a server on loopback work unchanged inside.
- Secrets travel in the environment of the chain (``/proc/<pid>/environ`` is readable only by the
  same user and root), never in argv.

Cold starts from a fresh interpreter cost what importing FastAPI costs (≈ 400 ms); see
``dispatch/zygote.py`` for the forking variant.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from core.models import Invocation, Outcome, WorkflowLimits, format_bytes
from core.ports import LogSink, ResolvedWorkflow
from dispatch.cgroups import CgroupLayout, CgroupLimits, LimitEvents, RunCgroup
from dispatch.runner import LAUNCHER, drain, forward_lines, send_request, wait_until_ready

logger = logging.getLogger(__name__)

INNER_UID = 1000
WORK = "/run/work"
SOCKETS = "/run/switchboard"
WORKFLOW_DIR = "/workflow"
LAUNCHER_PATH = "/opt/switchboard/launcher.py"
FALLBACK_RELAY_PORT = 8900
LIMIT_POLL_SECONDS = 0.1
SLIRP_READY_SECONDS = 10.0

# Joins the cgroups, sets the rlimits, binds the sources; then execs the rest of argv. Its argv:
#   <procs files…> -- <nofile> <fsize in 512-byte blocks> -- <source> <mount point>… -- <command…>
STAGE_SCRIPT = r"""set -e
while [ "$1" != -- ]; do echo $$ > "$1"; shift; done; shift
ulimit -n "$1"; ulimit -f "$2"; ulimit -c 0; shift 3
while [ "$1" != -- ]; do mount --bind "$1" "$2"; shift 2; done; shift
exec "$@"
"""

SYSTEM_PATHS = ("/usr",)
SYSTEM_LINKS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
PUBLIC_ETC = ("/etc/ssl", "/etc/ca-certificates", "/etc/localtime", "/etc/mime.types")


@dataclass(frozen=True, slots=True)
class SandboxSettings:
    uid: int
    runs_dir: Path
    """Per-run directories; traversable (0711) by ``uid`` so bwrap can reach the mount points."""
    runtime_address: tuple[str, int]
    """Where the server's own HTTP listener is: the runtime API relay's far end."""
    startup_timeout: float
    cgroups: CgroupLayout


@dataclass(frozen=True, slots=True)
class RunDirectory:
    """``<runs_dir>/<run_id>``: mount points, generated ``/etc`` files, writable dirs, sockets."""

    path: Path

    @property
    def work(self) -> Path:
        return self.path / "work"

    @property
    def sockets(self) -> Path:
        return self.path / "sockets"

    @property
    def workflow_socket(self) -> Path:
        return self.sockets / "workflow.sock"

    @property
    def runtime_socket(self) -> Path:
        return self.sockets / "runtime.sock"

    def mount_point(self, index: int) -> Path:
        return self.path / "mnt" / str(index)

    def etc_file(self, name: str) -> Path:
        return self.path / "etc" / name

    def create(self, uid: int, sources: Sequence[Path], network: str) -> None:
        self.path.mkdir(mode=0o711)
        for directory in (self.work, self.sockets):
            directory.mkdir(mode=0o700)
            os.chown(directory, uid, uid)
        (self.path / "mnt").mkdir(mode=0o711)
        for index, source in enumerate(sources):
            point = self.mount_point(index)
            if source.is_dir():
                point.mkdir(mode=0o755)
            else:
                point.touch(mode=0o644)
        (self.path / "etc").mkdir(mode=0o755)
        for name, text in etc_files(network).items():
            self.etc_file(name).write_text(text, encoding="utf-8")

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def etc_files(network: str) -> dict[str, str]:
    """The only ``/etc`` a workflow sees, besides public certificates and the timezone."""
    files = {
        "passwd": "root:x:0:0::/:/usr/sbin/nologin\n"
        f"run:x:{INNER_UID}:{INNER_UID}::{WORK}:/bin/sh\n",
        "group": f"root:x:0:\nrun:x:{INNER_UID}:\n",
        "hosts": "127.0.0.1\tlocalhost\n::1\tlocalhost\n",
        "nsswitch.conf": "passwd: files\ngroup: files\nhosts: files dns\n",
        "resolv.conf": "nameserver 10.0.2.3\n" if network == "internet" else "",
    }
    return files


def read_only_sources(workflow: ResolvedWorkflow) -> list[tuple[Path, str]]:
    """Host paths a run sees read-only, and where: interpreter, environment, workflow, launcher."""
    env = workflow.python.parent.parent
    sources = [(env, str(env))]
    interpreter = base_interpreter_prefix(env)
    if interpreter is not None and not interpreter.is_relative_to("/usr"):
        sources.append((interpreter, str(interpreter)))
    sources.append((workflow.source_path.parent, WORKFLOW_DIR))
    sources.append((LAUNCHER, LAUNCHER_PATH))
    return sources


def base_interpreter_prefix(env: Path) -> Path | None:
    """The prefix of the interpreter a virtual environment was made from (``pyvenv.cfg`` home)."""
    try:
        config = (env / "pyvenv.cfg").read_text(encoding="utf-8")
    except OSError:
        return None
    for line in config.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "home":
            return Path(value.strip()).resolve().parent
    return None


def sandbox_command(
    *,
    run_dir: RunDirectory,
    sources: Sequence[tuple[Path, str]],
    cgroup_procs: Sequence[Path],
    limits: WorkflowLimits,
    uid: int,
    inner_command: Sequence[str],
    info_fd: int | None,
) -> list[str]:
    """The argv of one sandboxed run (paths and numbers only: secrets go in the environment)."""
    stage = [
        *(str(path) for path in cgroup_procs),
        "--",
        str(limits.open_files),
        str(max(1, limits.file_size // 512)),
        "--",
    ]
    for index, (source, _) in enumerate(sources):
        stage += [str(source), str(run_dir.mount_point(index))]
    bwrap = [
        "bwrap",
        "--unshare-user", "--uid", str(INNER_UID), "--gid", str(INNER_UID),
        "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
        "--hostname", "sandbox",
        "--die-with-parent", "--new-session", "--disable-userns",
        "--cap-drop", "ALL",
    ]  # fmt: skip
    bwrap += system_mounts()
    for path in PUBLIC_ETC:
        bwrap += ["--ro-bind-try", path, path]
    for name in etc_files(limits.network):
        bwrap += ["--ro-bind", str(run_dir.etc_file(name)), f"/etc/{name}"]
    bwrap += ["--proc", "/proc", "--dev", "/dev"]
    bwrap += ["--size", str(limits.tmp_size), "--perms", "1777", "--tmpfs", "/tmp"]  # noqa: S108
    for index, (_, destination) in enumerate(sources):
        bwrap += ["--ro-bind", str(run_dir.mount_point(index)), destination]
    bwrap += ["--bind", str(run_dir.work), WORK, "--bind", str(run_dir.sockets), SOCKETS]
    bwrap += ["--chdir", WORK]
    if info_fd is not None:
        bwrap += ["--info-fd", str(info_fd)]
    drop = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--no-new-privs"]
    return [
        "unshare", "--mount", "--propagation", "private", "--",
        "sh", "-c", STAGE_SCRIPT, "sandbox-stage", *stage, "--",
        *drop, "--", *bwrap, "--", *inner_command,
    ]  # fmt: skip


def system_mounts() -> list[str]:
    """bwrap arguments for the read-only system: ``/usr`` and the host's links into it."""
    arguments: list[str] = []
    for path in SYSTEM_PATHS:
        arguments += ["--ro-bind", path, path]
    for link in SYSTEM_LINKS:
        if os.path.islink(link):
            arguments += ["--symlink", os.readlink(link), link]
        elif os.path.isdir(link):
            arguments += ["--ro-bind", link, link]
    return arguments


def relay_port(settings: SandboxSettings) -> int:
    """The server's own port (so loopback URLs it signs work inside), unless the sandbox user
    cannot bind it (below 1024): then 8900."""
    port = settings.runtime_address[1]
    return port if port >= 1024 else FALLBACK_RELAY_PORT


def limit_error(events: LimitEvents, limits: WorkflowLimits) -> str | None:
    """The error that names the limit a run broke, if it broke one."""
    if events.oom_kills:
        return f"memory limit of {format_bytes(limits.memory)} exceeded"
    if events.pids_max:
        return f"process limit of {limits.pids} reached"
    return None


class SandboxRunner:
    """Runs each invocation in a fresh bubblewrap sandbox with its own cgroup."""

    def __init__(self, settings: SandboxSettings, *, base_env: Mapping[str, str]) -> None:
        self._settings = settings
        self._base_env = dict(base_env)
        self._runtime_uri = f"http://127.0.0.1:{relay_port(settings)}"

    async def run(
        self, invocation: Invocation, workflow: ResolvedWorkflow, on_log: LogSink
    ) -> Outcome:
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
            launch = Launch(invocation, workflow, run_dir, cgroup, sources, self._env(invocation))
            return await launch.run(settings, on_log)
        finally:
            if relay is not None:
                relay.close()
            await asyncio.to_thread(_clean_up, run_dir, cgroup)

    def _env(self, invocation: Invocation) -> dict[str, str]:
        return {
            **self._base_env,
            **invocation.env,
            "HOME": WORK,
            "TMPDIR": "/tmp",  # noqa: S108 - the sandbox's own tmpfs
            "CODEWORDS_RUNTIME_URI": self._runtime_uri,
            "RUNTIME_URI": self._runtime_uri,
            "CODEWORDS_SERVICE_ROOT": WORKFLOW_DIR,
        }


class Launch:
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

    async def run(self, settings: SandboxSettings, on_log: LogSink) -> Outcome:
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
        argv = sandbox_command(
            run_dir=self.run_dir,
            sources=self.sources,
            cgroup_procs=self.cgroup.procs_files,
            limits=self.limits,
            uid=settings.uid,
            inner_command=inner,
            info_fd=pipes.info_write,
        )
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=self.env,
                start_new_session=True,
                pass_fds=pipes.child_ends(),
            )
        except OSError as exc:
            pipes.close()
            return Outcome.failure(f"could not start the sandbox: {exc.strerror or exc}")
        finally:
            pipes.close_child_ends()
        run_id = self.invocation.run_id
        logger.info("run %s: sandbox started as pid %s", run_id, process.pid)
        if process.stdout is None or process.stderr is None:  # pragma: no cover - both are PIPEs
            raise RuntimeError("the sandbox has no output pipes")
        readers = [
            asyncio.create_task(forward_lines(process.stdout, "stdout", on_log)),
            asyncio.create_task(forward_lines(process.stderr, "stderr", on_log)),
        ]
        watcher = asyncio.create_task(self._watch_limits())
        try:
            serve = asyncio.create_task(self._serve(settings, process, pipes))
            done, _ = await asyncio.wait({serve, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if serve not in done:  # a limit was hit first: the watcher named it
                serve.cancel()
                await asyncio.gather(serve, return_exceptions=True)
                return Outcome.failure(watcher.result())
            outcome = serve.result()
            broken = limit_error(self.cgroup.events(), self.limits)
            if broken is not None and outcome.status.value != "completed":
                return Outcome.failure(broken)
            return outcome
        finally:
            watcher.cancel()
            await self._end(process, readers, pipes)

    async def _serve(
        self, settings: SandboxSettings, process: asyncio.subprocess.Process, pipes: _Pipes
    ) -> Outcome:
        invocation = self.invocation
        deadline = asyncio.timeout(invocation.timeout)
        try:
            async with deadline:
                if pipes.info_read is not None:
                    problem = await self._connect_internet(pipes)
                    if problem is not None:
                        return Outcome.failure(problem)
                problem = await wait_until_ready(process, pipes.ready, settings.startup_timeout)
                if problem is not None:
                    return Outcome.failure(problem)
                return await send_request(invocation, process, self.run_dir.workflow_socket)
        except TimeoutError:
            if not deadline.expired():
                raise
            logger.info("run %s: timed out after %g s", invocation.run_id, invocation.timeout)
            return Outcome.failure(f"timed out after {invocation.timeout:g} s", timed_out=True)

    async def _connect_internet(self, pipes: _Pipes) -> str | None:
        """Attach slirp4netns to the sandbox's network namespace, then let the sandbox go on."""
        if pipes.info_read is None or pipes.netns_read is None or pipes.go_write is None:
            raise RuntimeError("the sandbox was started without its network pipes")
        info = await asyncio.to_thread(_read_json, pipes.info_read)
        child = info.get("child-pid")
        if not isinstance(child, int):
            return "the sandbox did not start (no child pid from bwrap)"
        if await asyncio.to_thread(os.read, pipes.netns_read, 1) != b"1":
            return "the sandbox ended before its network was connected; see the run's logs"
        ready_read, ready_write = os.pipe()
        try:
            # As root, by netns path: given a pid, slirp4netns would first join that process's
            # user namespace, which for --disable-userns is a nested one that does not own the
            # network namespace (EPERM), and the sandbox uid cannot enter the outer one from
            # outside. slirp4netns confines itself (--enable-sandbox: empty root, no
            # capabilities; --enable-seccomp).
            self.slirp = await asyncio.create_subprocess_exec(
                "slirp4netns", "--configure", "--mtu=65520", "--disable-host-loopback",
                "--enable-sandbox", "--enable-seccomp", f"--ready-fd={ready_write}",
                "--netns-type=path", f"/proc/{child}/ns/net", "tap0",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                pass_fds=(ready_write,),
                start_new_session=True,
            )  # fmt: skip
        finally:
            os.close(ready_write)
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
        try:
            os.write(pipes.go_write, b"1")
        except BrokenPipeError:
            return "the sandbox ended before its network was connected; see the run's logs"
        return None

    async def _watch_limits(self) -> str:
        """Return once the run breaks its memory or process limit, naming it."""
        while True:
            await asyncio.sleep(LIMIT_POLL_SECONDS)
            broken = limit_error(self.cgroup.events(), self.limits)
            if broken is not None:
                logger.info("run %s: %s", self.invocation.run_id, broken)
                return broken

    async def _end(
        self,
        process: asyncio.subprocess.Process,
        readers: list[asyncio.Task[None]],
        pipes: _Pipes,
    ) -> None:
        """Kill everything in the run's cgroup (and slirp4netns), collect the last output."""
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        if self.slirp is not None:
            with contextlib.suppress(ProcessLookupError):
                self.slirp.kill()
        try:
            await asyncio.to_thread(self.cgroup.destroy)
            await process.wait()
            if self.slirp is not None:
                await self.slirp.wait()
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


async def relay_runtime_api(socket_path: Path, address: tuple[str, int]) -> asyncio.Server:
    """Listen on ``socket_path`` (mode 0666: the sandbox user connects) and relay to ``address``."""

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*address)
        except OSError:
            writer.close()
            return
        await asyncio.gather(
            _pipe(reader, upstream_writer), _pipe(upstream_reader, writer), return_exceptions=True
        )

    server = await asyncio.start_unix_server(relay, path=str(socket_path))
    os.chmod(socket_path, 0o666)  # noqa: S103 - one run's own socket
    return server


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    finally:
        if reader.at_eof():
            writer.close()


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


def _clean_up(run_dir: RunDirectory, cgroup: RunCgroup) -> None:
    cgroup.destroy()
    run_dir.remove()


def probe_sandbox(uid: int, runs_dir: Path) -> str | None:
    """None if bubblewrap sandboxes work here as ``uid``; else why not (for the fallback)."""
    if uid == 0:
        return "sandbox_uid must not be 0"
    for tool in ("bwrap", "setpriv", "unshare", "mount"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian: apt-get install bubblewrap util-linux)"
    argv = [
        "unshare", "--mount", "--propagation", "private", "--",
        "setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--no-new-privs", "--",
        "bwrap", "--unshare-user", "--unshare-pid", "--unshare-net", "--unshare-ipc",
        "--unshare-uts", "--die-with-parent", "--disable-userns",
        *system_mounts(), "--proc", "/proc", "--", "/usr/bin/true",
    ]  # fmt: skip
    try:
        completed = subprocess.run(  # noqa: S603 - fixed argv
            argv, capture_output=True, text=True, timeout=10, check=False, cwd="/"
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"a test sandbox did not run: {exc}"
    if completed.returncode != 0:
        return f"a test sandbox failed: {completed.stderr.strip() or completed.returncode}"
    runs_dir.mkdir(mode=0o711, parents=True, exist_ok=True)
    os.chmod(runs_dir, 0o711)  # noqa: S103 - traversable, not listable
    for stale in runs_dir.iterdir():
        logger.warning("removing the stale run directory %s left by an earlier server", stale)
        shutil.rmtree(stale, ignore_errors=True)
    return None
