"""Serve one workflow's FastAPI ``app`` on a Unix socket, then say "ready" on a pipe.

Run by the workflow environment's interpreter, not by Switchboard's, so it imports only the
standard library and uvicorn (both present in every environment)::

    <env>/bin/python launcher.py <workflow_file> <unix_socket_path> <ready_fd> [<parent_pid>|-]
        [<port>:<runtime_socket> [<netns_fd>:<go_fd>]]

The workflow file is loaded under the module name ``__workflow__`` so that its own
``if __name__ == "__main__": uvicorn.run(...)`` does not start a TCP server. The runner learns the
server is accepting connections from the line ``ready`` on ``ready_fd``; if the process dies first,
the runner sees the pipe close instead. Exit code 2 means the workflow could not be loaded.

In the sandbox (``sandbox_runner.py``) the parent pid is ``-`` (bubblewrap's ``--die-with-parent``
does that job, and the parent is the sandbox's pid 1), and ``<port>:<runtime_socket>`` asks for a
forwarder: connections to ``127.0.0.1:<port>`` inside the sandbox's network namespace are relayed
to the Unix socket the runtime API is forwarded on, so ``CODEWORDS_RUNTIME_URI`` works under every
network policy. It runs in threads, so a workflow that blocks its event loop while calling the
runtime API (a sync client in an ``async def``) still gets an answer. ``<netns_fd>:<go_fd>``: say
on the first that bubblewrap is done with the network namespace, then wait on the second until
the runner has connected it to the internet, before any workflow code runs.

A warm process (``SWITCHBOARD_WARM=1`` in its environment, ``warm_pool.py``) serves one run
after another: :class:`WarmRequests` takes the run's own environment (its run-scoped
``CODEWORDS_API_KEY``) from a request header into ``os.environ`` and prints the request's fence
line after the response, so the runner knows every line of that run has arrived.
"""

from __future__ import annotations

import os  # already loaded by the interpreter's startup: no sys.path search
import sys

# Running a script puts its directory first on sys.path; this file's directory (Switchboard's
# ``inside``, or ``/opt/switchboard`` in the sandbox) must never shadow the
# standard library or the workflow's own imports. Drop it before importing anything else.
if sys.path and os.path.realpath(sys.path[0]) == os.path.dirname(os.path.realpath(__file__)):
    del sys.path[0]

import ctypes
import importlib.util
import json
import select
import signal
import socket
import threading
from types import ModuleType
from typing import Any, NoReturn

import uvicorn

_PR_SET_PDEATHSIG = 1
WARM_ENV = "SWITCHBOARD_WARM"
RUN_ENV_HEADER = b"x-switchboard-run-env"
FENCE_HEADER = b"x-switchboard-fence"
_UVICORN_LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")
EXIT_BAD_WORKFLOW = 2


def die_with_parent(parent_pid: int | None) -> None:
    """Get SIGKILL when the server that started us dies, so no workflow outlives a crash."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            print(
                f"launcher: prctl(PR_SET_PDEATHSIG) failed: {os.strerror(ctypes.get_errno())}",
                file=sys.stderr,
            )
    # The parent may have died before prctl took effect: then we were already re-parented.
    parent_now = os.getppid()
    if parent_now == 1 or (parent_pid is not None and parent_now != parent_pid):
        os._exit(1)


def load_workflow(path: str) -> ModuleType:
    """Import the workflow file as ``__workflow__``, from its own directory."""
    directory = os.path.dirname(os.path.abspath(path))
    sys.path.insert(0, directory)
    os.chdir(directory)
    sys.argv = [path]
    # Bytecode for the workflow would land next to its source, which may be read-only.
    sys.dont_write_bytecode = True
    spec = importlib.util.spec_from_file_location("__workflow__", path)
    if spec is None or spec.loader is None:
        fail(f"cannot load {path} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules["__workflow__"] = module  # pydantic and dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


def fail(message: str) -> NoReturn:
    print(f"launcher: {message}", file=sys.stderr)
    sys.exit(EXIT_BAD_WORKFLOW)


def forward_runtime_api(port: int, unix_path: str) -> None:
    """Relay ``127.0.0.1:port`` to the Unix socket ``unix_path``, one thread per connection."""
    listener = socket.create_server(("127.0.0.1", port))

    def relay(client: socket.socket) -> None:
        with client, socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as upstream:
            try:
                upstream.connect(unix_path)
            except OSError as exc:
                print(f"launcher: runtime API unreachable: {exc}", file=sys.stderr)
                return
            peers = {client: upstream, upstream: client}
            reading = [client, upstream]
            try:
                while reading:
                    for end in select.select(reading, [], [])[0]:
                        data = end.recv(65536)
                        if data:
                            peers[end].sendall(data)
                        else:  # half-close: pass the EOF on, keep relaying the other way
                            reading.remove(end)
                            peers[end].shutdown(socket.SHUT_WR)
            except OSError:
                return  # a reset on either side ends the relay

    def accept() -> None:
        while True:
            client, _ = listener.accept()
            threading.Thread(target=relay, args=(client,), daemon=True).start()

    threading.Thread(target=accept, name="runtime-forwarder", daemon=True).start()


class WarmRequests:
    """ASGI middleware of a warm process: per request, the run's environment and a fence.

    The runner sends one request at a time, so setting ``os.environ`` here races no other run.
    Both headers are taken off before the workflow sees the request (the key never shows in
    ``request.headers``). The fence goes to stdout and stderr after the response, whatever the
    workflow did, so that the runner can tell this run's lines from any printed later.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        fence = None
        headers = []
        for name, value in scope["headers"]:
            if name == RUN_ENV_HEADER:
                os.environ.update(json.loads(value))
            elif name == FENCE_HEADER:
                fence = value.decode("ascii")
            else:
                headers.append((name, value))
        try:
            await self.app({**scope, "headers": headers}, receive, send)
        finally:
            if fence is not None:
                for stream in (sys.stdout, sys.stderr):
                    print(fence, file=stream, flush=True)


class ReadyServer(uvicorn.Server):
    """A uvicorn server that writes ``ready`` to a pipe once it accepts connections."""

    def __init__(self, config: uvicorn.Config, ready_fd: int) -> None:
        super().__init__(config)
        self._ready_fd: int | None = ready_fd

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started and self._ready_fd is not None:
            fd, self._ready_fd = self._ready_fd, None
            try:
                os.write(fd, b"ready\n")
            finally:
                os.close(fd)


def receive_environment() -> None:
    """Take the run's environment (its key, the user's secrets, the declared variables) from the
    descriptor ``SWITCHBOARD_RUN_ENV_FD`` names (``bwrap.py`` :data:`RUN_ENV_FD`): the
    processes that built the sandbox never had it in theirs. A zygote's child has it already."""
    named = os.environ.pop("SWITCHBOARD_RUN_ENV_FD", None)
    if named is None:
        return
    fd = int(named)
    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    os.close(fd)
    os.environ.clear()
    os.environ.update(json.loads(b"".join(chunks)))


def close_inherited_fds(keep: list[int]) -> None:
    """Close every descriptor but stdin, stdout, stderr and ``keep``, before any workflow code:
    a subprocess that uvloop starts inherits every inheritable descriptor of the server (uvloop
    does not implement ``close_fds``), and a sandboxed run gets only its own pipes."""
    try:
        names = os.listdir("/proc/self/fd")
    except FileNotFoundError:  # no /proc: a development host without the sandbox
        return
    for name in names:
        fd = int(name)
        if fd > 2 and fd not in keep:
            try:
                os.close(fd)
            except OSError:  # the directory listdir had open
                pass


def main(argv: list[str]) -> None:
    if len(argv) not in (4, 5, 6, 7):
        fail(
            "usage: launcher.py <workflow_file> <unix_socket_path> <ready_fd> [<parent_pid>|-] "
            "[<port>:<runtime_socket>]"
        )
    workflow_file, socket_path, ready_fd = argv[1], argv[2], int(argv[3])
    receive_environment()
    passed = [ready_fd]
    if len(argv) == 7:
        passed += [int(fd) for fd in argv[6].split(":")]
    close_inherited_fds(passed)
    parent = argv[4] if len(argv) >= 5 else ""
    if parent != "-":
        die_with_parent(int(parent) if parent else None)
    if len(argv) >= 6:
        port, _, runtime_socket = argv[5].partition(":")
        forward_runtime_api(int(port), runtime_socket)
    if len(argv) == 7:
        netns_fd, _, go_fd = argv[6].partition(":")
        os.write(int(netns_fd), b"1")
        os.close(int(netns_fd))
        if os.read(int(go_fd), 1) != b"1":
            fail("the runner did not connect the network")
        os.close(int(go_fd))
    # The workflow may start subprocesses; they must not hold the ready pipe open.
    os.set_inheritable(ready_fd, False)
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    sys.stderr.reconfigure(line_buffering=True)  # type: ignore[union-attr]

    module = load_workflow(workflow_file)
    app = getattr(module, "app", None)
    if app is None:
        fail(f"{workflow_file} defines no `app` (a FastAPI application) at module level")

    if os.environ.pop(WARM_ENV, None) == "1":
        app = WarmRequests(app)

    log_level = os.environ.get("LOGLEVEL", "info").lower()
    if log_level not in _UVICORN_LOG_LEVELS:
        log_level = "warning" if log_level == "warn" else "info"
    config = uvicorn.Config(
        app, uds=socket_path, log_level=log_level, lifespan="auto", access_log=False
    )
    ReadyServer(config, ready_fd).run()


if __name__ == "__main__":
    main(sys.argv)
