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
# env_vars = ["PORT=8000", "PROBE_TOKEN"]
# [tool.switchboard]
# warm = true
# ///
"""Test workflow that opts into warm reuse: says which process served it and with which secret."""

import asyncio
import os
import secrets
from typing import Any

from fastapi import FastAPI, Request

app = FastAPI(title="secret-warm")

PROCESS = secrets.token_hex(8)  # made once per process: two runs that see the same one shared it


@app.post("/")
async def visit(request: Request) -> dict[str, Any]:
    token = os.environ.get("PROBE_TOKEN")
    if (await request.json()).get("later"):
        # Printed once the run is over: while the process waits, idle, for the next run.
        asyncio.get_running_loop().call_later(0.5, print, f"later={token}")
    return {"process": PROCESS, "token": token}
