"""The bubblewrap command line and the per-run directory of a sandboxed run (DESIGN §5).

:func:`sandbox_command` builds one run's argv (paths and numbers only: secrets travel in the
environment), :class:`RunDirectory` the host directory its mount points, generated ``/etc`` and
writable dirs live in; :func:`zygote_command` the same chain for a zygote (``zygote_pool.py``).
See ``sandbox_runner.py`` for why each step of the chain is there.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from core.addresses import IPNetwork
from core.models import WorkflowLimits
from core.ports import ResolvedWorkflow
from dispatch.sandbox.cgroups import CgroupLayout
from dispatch.sandbox.process_runner import LAUNCHER

ZYGOTE = LAUNCHER.with_name("zygote_server.py")

logger = logging.getLogger(__name__)

INNER_UID = 1000
WORK = "/run/work"
SOCKETS = "/run/switchboard"
SHM = "/dev/shm"  # noqa: S108 - the run's own tmpfs
WORKFLOW_DIR = "/workflow"
LAUNCHER_PATH = "/opt/switchboard/launcher.py"
FALLBACK_RELAY_PORT = 8900
ZYGOTE_PATH = "/opt/switchboard/zygote_server.py"
RESOLV_INTERNET = "/opt/switchboard/resolv.internet"
CHAIN_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
"""The whole environment of the processes that build a sandbox (root's ``unshare``, ``sh``,
``mount``, then bwrap): fixed, since a variable a workflow declares (``LD_PRELOAD``) would run
its code there. The run's own environment follows on a descriptor (:data:`RUN_ENV_FD`)."""
RUN_ENV_FD = "SWITCHBOARD_RUN_ENV_FD"
"""Names the descriptor the launcher reads the run's environment from (JSON), before any
workflow code runs."""

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
    zygote_cap: int = 8
    """At most this many idle zygotes are kept (least recently used ones stop first)."""
    network_allow: tuple[IPNetwork, ...] = ()
    """Private networks ``internet`` runs may reach all the same (``netfilter.py``)."""


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
        if network == "zygote":  # a zygote's children pick theirs
            internet = etc_files("internet")["resolv.conf"]
            self.etc_file("resolv.internet").write_text(internet, encoding="utf-8")

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
    seccomp_fd: int | None = None,
) -> list[str]:
    """The argv of one sandboxed run (paths and numbers only: secrets go in the environment)."""
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
    bwrap += ["--size", str(limits.tmp_size), "--perms", "1777", "--tmpfs", SHM]
    for index, (_, destination) in enumerate(sources):
        bwrap += ["--ro-bind", str(run_dir.mount_point(index)), destination]
    bwrap += ["--bind", str(run_dir.work), WORK, "--bind", str(run_dir.sockets), SOCKETS]
    bwrap += read_only_root()
    bwrap += ["--chdir", WORK]
    if info_fd is not None:
        bwrap += ["--info-fd", str(info_fd)]
    if seccomp_fd is not None:  # dispatch/sandbox/seccomp.py; installed right before the exec
        bwrap += ["--seccomp", str(seccomp_fd)]
    return staged(run_dir, sources, cgroup_procs, limits, uid, [*bwrap, "--", *inner_command])


def zygote_command(
    *,
    zygote_dir: RunDirectory,
    sources: Sequence[tuple[Path, str]],
    uid: int,
    command: Sequence[str],
) -> list[str]:
    """The argv of a zygote: the same chain and read-only view as a run, with no run dir, no
    secrets, and root of its own user namespace (``uid`` outside), so that each child it forks can
    make the namespaces of one run (``inside/zygote_server.py``). ``/run/work``,
    ``/run/switchboard`` and ``/workflow`` are empty mount points; ``/etc/resolv.conf`` is empty
    (``none``) until a child of an ``internet`` run binds :data:`RESOLV_INTERNET` over it. Its
    ``/`` and ``/dev`` are read-only: what every child shares must be what none of them can
    change."""
    bwrap = [
        "bwrap",
        "--unshare-user", "--uid", "0", "--gid", "0", "--cap-add", "ALL",
        "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
        "--hostname", "sandbox", "--die-with-parent", "--new-session",
    ]  # fmt: skip
    bwrap += system_mounts()
    for path in PUBLIC_ETC:
        bwrap += ["--ro-bind-try", path, path]
    for name in etc_files("none"):
        bwrap += ["--ro-bind", str(zygote_dir.etc_file(name)), f"/etc/{name}"]
    internet = zygote_dir.etc_file("resolv.internet")
    bwrap += ["--ro-bind", str(internet), RESOLV_INTERNET]
    bwrap += ["--proc", "/proc", "--dev", "/dev"]
    bwrap += ["--dir", "/tmp", "--dir", WORK, "--dir", SOCKETS, "--dir", WORKFLOW_DIR]  # noqa: S108
    for index, (_, destination) in enumerate(sources):
        bwrap += ["--ro-bind", str(zygote_dir.mount_point(index)), destination]
    bwrap += read_only_root()
    bwrap += ["--chdir", "/"]
    limits = WorkflowLimits()
    return staged(zygote_dir, sources, (), limits, uid, [*bwrap, "--", *command])


def read_only_root() -> list[str]:
    """bwrap arguments, after every mount, that make ``/`` and ``/dev`` read-only (each only that
    mount: the writable ones on top stay writable). A run writes only to what is its own:
    ``/tmp``, ``/dev/shm``, ``/run/work``, ``/run/switchboard``; in a zygote, every child sees
    the zygote's root, so a writable one would carry files from one run into the next."""
    return ["--remount-ro", "/dev", "--remount-ro", "/"]


def staged(
    run_dir: RunDirectory,
    sources: Sequence[tuple[Path, str]],
    cgroup_procs: Sequence[Path],
    limits: WorkflowLimits,
    uid: int,
    bwrap: Sequence[str],
) -> list[str]:
    """``bwrap`` behind the root stage (cgroups, rlimits, source binds) and the drop to ``uid``."""
    stage = [
        *(str(path) for path in cgroup_procs),
        "--",
        str(limits.open_files),
        str(max(1, limits.file_size // 512)),
        "--",
    ]
    for index, (source, _) in enumerate(sources):
        stage += [str(source), str(run_dir.mount_point(index))]
    drop = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--no-new-privs"]
    return [
        "unshare", "--mount", "--propagation", "private", "--",
        "sh", "-c", STAGE_SCRIPT, "sandbox-stage", *stage, "--",
        *drop, "--", *bwrap,
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
