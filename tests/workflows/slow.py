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
"""Test workflow: sleeps on request, so tests can time runs out and cancel them mid-flight."""

import asyncio
import os
from pathlib import Path

from fastapi import FastAPI
from pydantic import BaseModel

app = FastAPI(title="slow")


class SleepRequest(BaseModel):
    seconds: float
    marker: str | None = None


def count_execution(marker: str) -> None:
    with Path(marker).open("a", encoding="utf-8") as file:
        file.write("started\n")


@app.post("/")
async def sleep(request: SleepRequest) -> dict[str, float]:
    if request.marker:
        await asyncio.to_thread(count_execution, request.marker)
    print(f"pid={os.getpid()}", flush=True)
    print("sleeping", flush=True)
    await asyncio.sleep(request.seconds)
    return {"slept": request.seconds}
