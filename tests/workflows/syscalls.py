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
"""Test workflow: makes the system calls the request names and says how each one ended.

Each call is ``[name, number, args...]`` (numbers resolved by the test for this machine), made
with ``syscall(2)`` directly; the answer maps each name to ``"ok"`` or the errno's name. It also
reports the ``Seccomp:`` line of its status and shows that threads and subprocesses still work.
"""

import ctypes
import errno
import os
import subprocess
import threading
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

app = FastAPI(title="syscalls")
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long


class Calls(BaseModel):
    calls: list[list[int | str]]


@app.post("/")
def call(request: Calls) -> dict[str, Any]:
    pid = os.getpid()
    results: dict[str, str] = {}
    for name, number, *args in request.calls:
        result = libc.syscall(ctypes.c_long(int(number)), *(ctypes.c_long(int(a)) for a in args))
        if os.getpid() != pid:  # a clone that worked: this is the child
            os._exit(0)
        if result < 0:
            code = ctypes.get_errno()
            results[str(name)] = errno.errorcode.get(code, str(code))
        else:
            results[str(name)] = "ok"
            if str(name).startswith("clone"):
                os.waitpid(result, 0)
            elif result > 2:  # a file descriptor (userfaultfd, io_uring_setup…)
                os.close(result)
    status = Path("/proc/self/status").read_text().splitlines()
    seccomp = next(line.split(":", 1)[1].strip() for line in status if line.startswith("Seccomp:"))
    answers: list[str] = []
    worker = threading.Thread(target=lambda: answers.append("thread"))
    worker.start()
    worker.join()
    echoed = subprocess.run(["echo", "subprocess"], capture_output=True, text=True, check=True)
    return {"seccomp": seccomp, "results": results, "works": [*answers, echoed.stdout.strip()]}
