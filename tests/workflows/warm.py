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
# [tool.switchboard]
# warm = true
# ///
"""Test workflow that opts into warm reuse: says which process served it and how often; fails
sleeps or hoards memory on request."""

import asyncio
import hashlib
import os
import secrets
from typing import Any

from fastapi import FastAPI, HTTPException, Request

app = FastAPI(title="warm")

PROCESS = secrets.token_hex(8)  # made once per process: two runs that see the same one shared it
served = 0


@app.post("/")
async def visit(request: Request) -> dict[str, Any]:
    global served
    served += 1
    print(f"visit {served} of {PROCESS}", flush=True)
    asked = await request.json()
    if asked.get("fail"):
        raise HTTPException(status_code=500, detail="failed on purpose")
    hoard = [b"x" * 2**20 for _ in range(asked.get("hoard_mib", 0))]  # touched, so charged
    await asyncio.sleep(asked.get("sleep", 0))
    key = os.environ.get("CODEWORDS_API_KEY", "")
    return {
        "process": PROCESS,
        "pid": os.getpid(),
        "served": served,
        "key_sha256": hashlib.sha256(key.encode()).hexdigest(),
        "key_run": key.split(".")[1] if key.startswith("cwk-run.") else None,
        "switchboard_headers": [name for name in request.headers if "switchboard" in name],
        "warm_env": os.environ.get("SWITCHBOARD_WARM"),
        "hoarded_mib": len(hoard),
    }
