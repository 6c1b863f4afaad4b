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
#   "HOME",
#   "PROBE_TOKEN",
#   "PROBE_PEM=none",
#   "PROBE_GREETING=hello",
# ]
# ///
"""Test workflow: reports the declared variables it got, gives its secret away in its output in
every way the redaction covers, and looks for it in every command line it can see."""

import asyncio
import base64
import os
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

app = FastAPI(title="secret-probe")

REPORTED = [
    "PROBE_TOKEN",
    "PROBE_PEM",
    "PROBE_GREETING",
    "UNDECLARED_TOKEN",
    "PORT",
    "CODEWORDS_RUNTIME_URI",
    "HOME",
]


class Probe(BaseModel):
    hold: str | None = None
    """wait until the file of this name appears in the workflow's directory"""
    fail: bool = False


def command_lines() -> list[bytes]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                found.append((entry / "cmdline").read_bytes())
            except OSError:
                continue
    return found


@app.post("/")
async def probe(asked: Probe) -> dict[str, Any]:
    token = os.environ.get("PROBE_TOKEN", "")
    print(f"token={token}", flush=True)
    half = len(token) // 2
    print("split=" + token[:half], end="", flush=True)
    print(token[half:], flush=True)
    print("b64=" + base64.b64encode(token.encode()).decode(), flush=True)
    print("url=" + quote(token, safe=""), flush=True)
    print(f"stderr={token}", file=sys.stderr, flush=True)
    print(os.environ.get("PROBE_PEM", ""), flush=True)
    if asked.hold:
        print("holding", flush=True)
        release = Path(os.environ["CODEWORDS_SERVICE_ROOT"]) / asked.hold
        async with asyncio.timeout(60):
            # The host test creates the file: no event crosses the sandbox, so poll it.
            while not release.exists():  # noqa: ASYNC110
                await asyncio.sleep(0.05)
    if asked.fail:
        raise HTTPException(status_code=500, detail=f"refused with {token}")
    lines = command_lines()
    return {
        "env": {name: os.environ.get(name) for name in REPORTED},
        "cmdlines_seen": len(lines),
        "cmdlines_with_token": [
            line.decode(errors="replace") for line in lines if token and token.encode() in line
        ],
    }
