# /// script
# requires-python = ">=3.11"
# dependencies = [
#   "fastapi>=0.115",
#   "uvicorn>=0.30",
#   "pydantic>=2.7",
#   "structlog>=24.1",
#   "httpx>=0.27",
#   "codewords-client==0.4.11",
# ]
# [tool.env-checker]
# env_vars = [
#   "PORT=8000",
#   "LOGLEVEL=INFO",
#   "CODEWORDS_API_KEY",
#   "CODEWORDS_RUNTIME_URI",
# ]
# ///
"""Test workflow: tries to break out of its sandbox in the way the request names.

Every attack that the sandbox stops ends in an exception (a 500 whose detail names it) or in the
run being killed; an attack that works answers ``{"escaped": ...}``.
"""

import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

app = FastAPI(title="hostile")

# Where a run might leave something for the next one: every directory of the sandbox's own view.
TRACE_DIRS = ("/", "/etc", "/opt", "/opt/switchboard", "/run", "/dev", "/dev/shm", "/tmp", "/root")
KEPT: list[int] = []  # a pseudo-terminal left open while the process lives (kept warm, say)


def descriptors() -> dict[str, str]:
    """The descriptors this process holds, and what each leads to."""
    held = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            held[fd] = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # the directory listdir had open, closed by now
            pass
    return held


AT_IMPORT = descriptors()  # what the workflow got, before it opened anything itself


class Attack(BaseModel):
    attack: str
    path: str = ""
    host: str = "127.0.0.1"
    port: int = 0
    marker: str = ""


def fork_bomb() -> None:
    while True:
        try:
            os.fork()
        except OSError:
            time.sleep(0.001)


@app.post("/")
def attack(request: Attack) -> dict[str, Any]:
    print(f"attack: {request.attack}", flush=True)
    try:
        return run_attack(request)
    except OSError as exc:  # stopped: say how, in the run's error
        raise HTTPException(status_code=500, detail=f"{type(exc).__name__}: {exc}") from exc


def run_attack(request: Attack) -> dict[str, Any]:
    if request.attack == "read":
        return {"escaped": Path(request.path).read_text()[:100]}
    if request.attack == "write":
        Path(request.path).write_text("owned")
        return {"escaped": request.path}
    if request.attack == "fork_bomb":
        fork_bomb()
    if request.attack == "memory":
        hoard = [b"x" * (64 * 1024 * 1024) for _ in range(160)]  # 10 GiB, touched
        return {"escaped": len(hoard)}
    if request.attack == "loop":
        while True:
            pass
    if request.attack == "escape_session":
        # setsid + double fork, ignoring SIGTERM: out of the process group, reparented.
        script = f"trap '' TERM; exec sleep {request.marker}"
        subprocess.Popen(["setsid", "sh", "-c", f'sh -c "{script}" & exit 0'])
        time.sleep(0.5)
        return {"escaped": "a process that outlives the run, unless the sandbox kills it"}
    if request.attack == "connect":
        with socket.create_connection((request.host, request.port), timeout=5) as connection:
            connection.sendall(b"hello")
            return {"escaped": connection.recv(100).decode()}
    if request.attack == "whoami":
        return {
            "uid": os.getuid(),
            "hostname": socket.gethostname(),
            "root": sorted(os.listdir("/")),
            "tmp_writable": os.access("/tmp", os.W_OK),
            "home": os.environ.get("HOME"),
            "home_writable": os.access(os.environ.get("HOME", "/"), os.W_OK),
            "interfaces": sorted(
                line.split(":")[0].strip()
                for line in Path("/proc/net/dev").read_text().splitlines()[2:]
            ),
            "pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
        }
    if request.attack == "leave_traces":
        return {"left": leave_traces(request.marker)}
    if request.attack == "descriptors":
        # Write a line into every descriptor held at load time (and still open) but stdin, stdout
        # and stderr: one that leads out of the sandbox (the zygote's stderr, a pipe of the
        # server's) carries it there.
        now = descriptors()
        for fd in {fd for fd, target in AT_IMPORT.items() if now.get(fd) == target}:
            if int(fd) > 2:
                try:
                    os.write(int(fd), f"{request.marker}\n".encode())
                except OSError:
                    pass
        return {"at_import": AT_IMPORT}
    raise ValueError(f"unknown attack {request.attack!r}")


def leave_traces(marker: str) -> list[str]:
    """A file named ``marker`` in each directory it can write to (in /dev/shm: a POSIX shared
    memory object), and an open pseudo-terminal; the paths it managed to write."""
    KEPT.extend(os.openpty())
    left = []
    home = os.environ.get("HOME", "/run/work")
    for directory in (*TRACE_DIRS, home):
        path = Path(directory) / marker
        try:
            path.write_text(marker)
        except OSError:
            continue
        left.append(str(path))
    return left
