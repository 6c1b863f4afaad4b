"""Serve one workflow's FastAPI ``app`` on a Unix socket, then say "ready" on a pipe.

Run by the workflow environment's interpreter, not by Switchboard's, so it imports only the
standard library and uvicorn (both present in every environment)::

    <env>/bin/python launcher.py <workflow_file> <unix_socket_path> <ready_fd> [<parent_pid>]

The workflow file is loaded under the module name ``__workflow__`` so that its own
``if __name__ == "__main__": uvicorn.run(...)`` does not start a TCP server. The runner learns the
server is accepting connections from the line ``ready`` on ``ready_fd``; if the process dies first,
the runner sees the pipe close instead. Exit code 2 means the workflow could not be loaded.
"""

from __future__ import annotations

import os  # already loaded by the interpreter's startup: no sys.path search
import sys

# Running a script puts its directory first on sys.path; this file's directory is Switchboard's
# ``dispatch`` package, whose modules (``queue.py``…) must never shadow the standard library or the
# workflow's own imports. Drop it before importing anything else.
if sys.path and os.path.realpath(sys.path[0]) == os.path.dirname(os.path.realpath(__file__)):
    del sys.path[0]

import ctypes
import importlib.util
import signal
import socket
from types import ModuleType
from typing import NoReturn

import uvicorn

_PR_SET_PDEATHSIG = 1
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


def main(argv: list[str]) -> None:
    if len(argv) not in (4, 5):
        fail("usage: launcher.py <workflow_file> <unix_socket_path> <ready_fd> [<parent_pid>]")
    workflow_file, socket_path, ready_fd = argv[1], argv[2], int(argv[3])
    die_with_parent(int(argv[4]) if len(argv) == 5 else None)
    # The workflow may start subprocesses; they must not hold the ready pipe open.
    os.set_inheritable(ready_fd, False)
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    sys.stderr.reconfigure(line_buffering=True)  # type: ignore[union-attr]

    module = load_workflow(workflow_file)
    app = getattr(module, "app", None)
    if app is None:
        fail(f"{workflow_file} defines no `app` (a FastAPI application) at module level")

    log_level = os.environ.get("LOGLEVEL", "info").lower()
    if log_level not in _UVICORN_LOG_LEVELS:
        log_level = "warning" if log_level == "warn" else "info"
    config = uvicorn.Config(
        app, uds=socket_path, log_level=log_level, lifespan="auto", access_log=False
    )
    ReadyServer(config, ready_fd).run()


if __name__ == "__main__":
    main(sys.argv)
