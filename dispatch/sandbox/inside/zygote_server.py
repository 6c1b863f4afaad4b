"""A zygote: import the workflow stack once, then fork one fully isolated child per run.

Run inside its own bubblewrap sandbox (``bwrap.py`` :func:`zygote_command`) by the
environment's interpreter, as root of its own user namespace (the unprivileged ``sandbox_uid``
outside), with no run directory, no secrets and no per-run data::

    <env>/bin/python zygote_server.py <control_fd>

It says ``ready`` on the control socket (``SOCK_SEQPACKET``) once the stack is imported, then
reads one message per run: a JSON header (workflow file, limits; no environment) and eight file
descriptors (stdout, stderr, ready pipe, status pipe, handshake socket, and three detached mount
trees the server cloned with ``open_tree``: the run's work dir, its sockets dir and its
workflow's directory). Per run::

    zygote ─fork→ keeper: says "k" (the server puts it in the run's cgroup meanwhile);
                  unshare mount/pid/net/ipc/uts; attach the trees; tmpfs /tmp and
                  /dev/shm, devpts /dev/pts (the zygote's / and /dev are read-only); lo up
                    └fork→ pid 1 of the run: fresh /proc; rlimits; handshake (the server puts it
                           in the run's cgroup, connects slirp4netns); new user namespace
                           (uid 1000), no further user namespaces, no capabilities; the
                           seccomp filter (``seccomp.py``); the workflow

The keeper reports the run's exit status on the status pipe. Children die with the zygote (the
pid namespace of its sandbox ends with it, and bwrap's ``--die-with-parent`` ends it with the
server); the zygote exits once its control socket closes and its children are done.
"""

from __future__ import annotations

import os
import sys

if sys.path and os.path.realpath(sys.path[0]) == os.path.dirname(os.path.realpath(__file__)):
    del sys.path[0]  # Switchboard's own folder: see launcher.py

import array
import base64
import ctypes
import fcntl
import importlib
import importlib.util
import json
import resource
import signal
import socket
import struct
from typing import Any

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
SYS_OPEN_TREE = 428  # x86_64 and aarch64 alike (new syscalls share numbers)
SYS_MOVE_MOUNT = 429
OPEN_TREE_CLONE = 0x1
AT_RECURSIVE = 0x8000
MOVE_MOUNT_F_EMPTY_PATH = 0x4
AT_FDCWD = -100
PR_SET_PDEATHSIG = 1
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
SOCK_FILTER_SIZE = 8  # struct sock_filter: u16 code, u8 jt, u8 jf, u32 k
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
IFF_RUNNING = 0x40
INNER_UID = 1000
FDS_PER_RUN = 8
STACK = (
    "fastapi",
    "pydantic",
    "uvicorn",
    "uvicorn.config",
    "uvicorn.server",
    "uvicorn.loops.auto",
    "uvicorn.loops.asyncio",
    "uvicorn.loops.uvloop",
    "uvloop",
    "uvicorn.protocols.http.auto",
    "uvicorn.protocols.http.h11_impl",
    "uvicorn.protocols.http.httptools_impl",
    "uvicorn.protocols.websockets.auto",
    "uvicorn.lifespan.on",
    "starlette.routing",
    "fastapi.routing",
    "httpx",
    "codewords_client",
)

libc = ctypes.CDLL(None, use_errno=True)


def check(result: int, what: str) -> int:
    if result < 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")
    return result


def mount(source: str, target: str, fstype: str | None, flags: int, data: str | None) -> None:
    check(
        libc.mount(
            source.encode(),
            target.encode(),
            fstype.encode() if fstype else None,
            flags,
            data.encode() if data else None,
        ),
        f"mount {target}",
    )


def attach(tree: int, target: str, *, read_only: bool = False) -> None:
    """Put a detached mount tree (from the server's ``open_tree``) at ``target``."""
    check(
        libc.syscall(SYS_MOVE_MOUNT, tree, b"", AT_FDCWD, target.encode(), MOVE_MOUNT_F_EMPTY_PATH),
        f"move_mount {target}",
    )
    os.close(tree)
    flags = MS_REMOUNT | MS_BIND | MS_NOSUID | MS_NODEV  # as bwrap's binds in a fresh sandbox
    mount("none", target, None, flags | (MS_RDONLY if read_only else 0), None)


def environment_under_tmp() -> list[str]:
    """This zygote's environment and interpreter dirs that live below /tmp (a data dir there):
    the run's fresh tmpfs on /tmp would hide them, so they are put back on top of it."""
    paths = {
        os.path.realpath(path)
        for path in (sys.prefix, sys.base_prefix, os.path.dirname(os.path.realpath(sys.executable)))
    }
    return sorted(path for path in paths if path.startswith("/tmp/"))  # noqa: S108


def clone(path: str) -> int:
    """A detached copy of the mounts at ``path`` (``open_tree``), to attach elsewhere."""
    return check(
        libc.syscall(SYS_OPEN_TREE, AT_FDCWD, path.encode(), OPEN_TREE_CLONE | AT_RECURSIVE),
        f"open_tree {path}",
    )


def loopback_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        request = struct.pack("16sH14x", b"lo", IFF_UP | IFF_RUNNING)
        fcntl.ioctl(probe.fileno(), SIOCSIFFLAGS, request)


def import_stack() -> None:
    for name in STACK:
        if importlib.util.find_spec(name.partition(".")[0]) is not None:
            try:
                importlib.import_module(name)
            except ImportError:  # an optional extra (httptools, websockets) is not installed
                pass


def warm_up() -> None:
    """Serve one request through a throwaway FastAPI app, so what FastAPI, pydantic, starlette,
    anyio and uvicorn import or build lazily on first use (``pydantic.v1`` on the first route,
    anyio's asyncio backend on the first request, uvicorn's protocol and logging setup: ≈ 45 ms
    together) is done once here instead of in every child. Nothing of any run is involved."""
    try:
        import asyncio

        import fastapi
        import pydantic
        import uvicorn
    except ImportError:  # a workflow stack without them: the children import what they need
        return

    class Greeting(pydantic.BaseModel):
        name: str

    app = fastapi.FastAPI()

    async def echo(greeting: Any) -> Any:
        return greeting

    # Set here, not as annotations: this module's are strings, and Greeting is local.
    echo.__annotations__ = {"greeting": Greeting, "return": Greeting}
    app.post("/", response_model=Greeting)(echo)

    uvicorn.Config(app, uds="/nonexistent", lifespan="auto", access_log=False).load()
    sent: list[dict[str, Any]] = []
    body = b'{"name": "zygote"}'
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/",
        "raw_path": b"/",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"content-length", b"18")],
        "server": None,
        "client": None,
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    try:
        asyncio.run(app(scope, receive, send))  # type: ignore[arg-type]
    except Exception as exc:  # a warm-up that fails costs speed, not correctness
        print(f"zygote: warm-up request failed: {exc!r}", file=sys.stderr)
    else:
        if not sent or sent[0].get("status") != 200:
            print(f"zygote: warm-up request answered {sent[:1]!r}", file=sys.stderr)


def serve(control: socket.socket) -> None:
    """Fork a keeper per message until the server closes the control socket."""
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # reap keepers automatically
    control.send(b"ready")
    while True:
        message, ancillary, _, _ = control.recvmsg(1 << 20, socket.CMSG_SPACE(FDS_PER_RUN * 4))
        if not message:
            break
        fds = array.array("i")
        for level, kind, data in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
        if len(fds) != FDS_PER_RUN:
            for fd in fds:
                os.close(fd)
            continue
        if os.fork() == 0:
            control.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            code = 70
            try:
                code = keep(json.loads(message), list(fds))
            finally:
                os._exit(code)
        for fd in fds:
            os.close(fd)
    # The sandbox (and so every run in it) ends with this process: let running runs finish.
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    while True:
        try:
            os.wait()
        except ChildProcessError:
            break


def keep(run: dict[str, Any], fds: list[int]) -> int:
    """Make the run's namespaces and mounts, fork its pid 1, report how it ended."""
    stdout, stderr, ready, status, handshake, work, sockets, workflow = fds
    os.setsid()
    check(libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl")
    # Say who we are first: the server moves this keeper into the run's cgroup while it makes the
    # namespaces and mounts (a cgroup v1 move waits for an RCU grace period, ≈ 10 ms), so that
    # wait is off the run's critical path. The keeper runs nothing of the workflow; pid 1 is
    # placed on its own handshake below either way, before any workflow code runs.
    os.write(handshake, b"k")
    devnull = os.open("/dev/null", os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(stdout, 1)
    os.dup2(stderr, 2)
    for fd in (devnull, stdout, stderr):
        os.close(fd)
    namespaces = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS
    check(libc.unshare(namespaces), "unshare")
    check(libc.sethostname(b"sandbox", 7), "sethostname")
    mount("none", "/", None, MS_REC | MS_PRIVATE, None)
    attach(work, "/run/work")
    attach(sockets, "/run/switchboard")
    attach(workflow, "/workflow", read_only=True)
    if run["network"] == "internet":
        mount("/opt/switchboard/resolv.internet", "/etc/resolv.conf", None, MS_BIND, None)
        mount("none", "/etc/resolv.conf", None, MS_REMOUNT | MS_BIND | MS_RDONLY, None)
    under_tmp = [(path, clone(path)) for path in environment_under_tmp()]
    mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, f"size={run['tmp_size']},mode=1777")  # noqa: S108
    for path, tree in under_tmp:
        os.makedirs(path, exist_ok=True)
        attach(tree, path, read_only=True)
    # The zygote's / and /dev are read-only (dispatch/sandbox/bwrap.py); what a run may write is its
    # own, as in a fresh sandbox: /dev/shm, and a devpts instance (another run's ptys unseen).
    shm = f"size={run['tmp_size']},mode=1777"
    mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, shm)  # noqa: S108
    pts = "newinstance,ptmxmode=0666,mode=620"
    mount("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, pts)
    loopback_up()
    pid = os.fork()
    if pid == 0:
        os.close(status)
        code = 70
        try:
            code = run_workflow(run, ready, handshake)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException as exc:
            print(f"zygote: the run could not start: {exc!r}", file=sys.stderr)
        finally:
            os._exit(code)
    for fd in (ready, handshake):
        os.close(fd)
    _, wait_status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(wait_status)
    os.write(status, f"{code}\n".encode())
    return 0


def run_workflow(run: dict[str, Any], ready: int, handshake: int) -> int:
    """Pid 1 of the run: finish confinement, wait to be placed in the cgroup, serve."""
    check(libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl")
    mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None)
    resource.setrlimit(resource.RLIMIT_NOFILE, (run["open_files"], run["open_files"]))
    resource.setrlimit(resource.RLIMIT_FSIZE, (run["file_size"], run["file_size"]))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    # The server reads this process's host pid from the credentials on the message, writes it
    # into the run's cgroup (and attaches slirp4netns to its network), then says go. (The keeper
    # said "k" on this socket before: the server reads both in order.)
    with socket.socket(fileno=handshake) as channel:
        channel.sendall(b"p")
        env = receive_environment(channel)
        if env is None:
            return 1
    check(libc.unshare(CLONE_NEWUSER), "unshare user")
    for name, text in (("setgroups", "deny"), ("uid_map", f"{INNER_UID} 0 1")):
        with open(f"/proc/self/{name}", "w", encoding="ascii") as file:
            file.write(text)
    with open("/proc/self/gid_map", "w", encoding="ascii") as file:
        file.write(f"{INNER_UID} 0 1")
    with open("/proc/sys/user/max_user_namespaces", "w", encoding="ascii") as file:
        file.write("0")  # as bwrap --disable-userns: no nested user namespaces
    drop_capabilities()
    os.environ.clear()
    os.environ.update(env)
    os.chdir("/run/work")
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    sys.stderr.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    confine_syscalls(base64.b64decode(run["seccomp"]))
    launcher = load_launcher()
    launcher.main(
        [
            "/opt/switchboard/launcher.py",
            run["workflow_file"],
            "/run/switchboard/workflow.sock",
            str(ready),
            "-",
            f"{run['relay_port']}:/run/switchboard/runtime.sock",
        ]
    )
    return 0


def receive_environment(channel: socket.socket) -> dict[str, str] | None:
    """The server's "go" (``g``) with the run's environment behind a 4-byte length, or None if
    the server gave up on this run. The environment (the run's key, the user's secrets) is read
    here, in the run's own pid 1: the zygote that forked it never holds it."""
    head = receive_exactly(channel, 5)
    if len(head) != 5 or head[:1] != b"g":
        return None
    (size,) = struct.unpack("!I", head[1:])
    body = receive_exactly(channel, size)
    if len(body) != size:
        return None
    env: dict[str, str] = json.loads(body)
    return env


def receive_exactly(channel: socket.socket, size: int) -> bytes:
    """Up to ``size`` bytes: fewer only when the other end closed."""
    chunks: list[bytes] = []
    missing = size
    while missing:
        chunk = channel.recv(missing)
        if not chunk:
            break
        chunks.append(chunk)
        missing -= len(chunk)
    return b"".join(chunks)


def drop_capabilities() -> None:
    """No capabilities (as bwrap --cap-drop ALL), none to regain by exec, no new privileges."""
    for capability in range(64):
        if libc.prctl(PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
            break  # past the last capability this kernel knows
    header = struct.pack("Ii", 0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this thread
    data = bytes(24)  # two empty __user_cap_data_struct: effective, permitted, inheritable
    check(libc.capset(header, data), "capset")
    check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl no_new_privs")


class SockFprog(ctypes.Structure):
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.c_void_p))


def confine_syscalls(program: bytes) -> None:
    """Install the runs' seccomp filter, as bwrap ``--seccomp`` does for a fresh sandbox: the
    BPF program the server built with libseccomp (``seccomp.py``). Last, once every
    mount and unshare of this run is done; after ``drop_capabilities`` (no new privileges)."""
    if not program or len(program) % SOCK_FILTER_SIZE:
        raise ValueError("the run's seccomp program is missing or malformed")
    code = ctypes.create_string_buffer(program, len(program))
    fprog = SockFprog(len(program) // SOCK_FILTER_SIZE, ctypes.addressof(code))
    check(
        libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0),
        "prctl seccomp",
    )


_LAUNCHER: Any = None


def load_launcher() -> Any:
    global _LAUNCHER
    if _LAUNCHER is None:
        path = "/opt/switchboard/launcher.py"
        spec = importlib.util.spec_from_file_location("switchboard_launcher", path)
        if spec is None or spec.loader is None:
            raise ImportError(path)
        _LAUNCHER = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(_LAUNCHER)
    return _LAUNCHER


def close_inherited_fds(keep: int) -> None:
    """Close every descriptor but stdin, stdout, stderr and ``keep``: a subprocess that uvloop
    starts inherits every inheritable descriptor of the server (it does not implement
    ``close_fds``), and whatever this process holds, every child forked from it holds too."""
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2 and fd != keep:
            try:
                os.close(fd)
            except OSError:  # the directory listdir had open
                pass


def main(argv: list[str]) -> None:
    close_inherited_fds(int(argv[1]))
    control = socket.socket(fileno=int(argv[1]))
    import_stack()
    warm_up()
    load_launcher()
    serve(control)


if __name__ == "__main__":
    main(sys.argv)
