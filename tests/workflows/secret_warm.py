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

import os
import secrets
from typing import Any

from fastapi import FastAPI

app = FastAPI(title="secret-warm")

PROCESS = secrets.token_hex(8)  # made once per process: two runs that see the same one shared it


@app.post("/")
async def visit() -> dict[str, Any]:
    return {"process": PROCESS, "token": os.environ.get("PROBE_TOKEN")}
