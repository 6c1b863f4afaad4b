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
"""Test workflow: reports the environment and headers the runtime handed it (never the key)."""

import os
import sys
from typing import Any

from fastapi import FastAPI, Request

app = FastAPI(title="env-dump")

ENV_NAMES = ["PORT", "LOGLEVEL", "CODEWORDS_RUNTIME_URI", "RUNTIME_URI", "CODEWORDS_SERVICE_ROOT"]
HEADER_NAMES = [
    "X-Request-Id",
    "X-Correlation-Id",
    "Codewords-Caller-Id",
    "X-Scheduled-Request-Id",
]


@app.post("/")
async def dump(request: Request) -> dict[str, Any]:
    print("env checked", flush=True)
    return {
        "env": {name: os.environ.get(name) for name in ENV_NAMES},
        "has_key": bool(os.environ.get("CODEWORDS_API_KEY")),
        "headers": {name: request.headers.get(name) for name in HEADER_NAMES},
        "argv": sys.argv,
    }
