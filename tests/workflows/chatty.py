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
"""Test workflow: writes a log line every ``interval`` seconds, so a follower sees lines arrive."""

import asyncio

from fastapi import FastAPI
from pydantic import BaseModel

app = FastAPI(title="chatty")


class TickRequest(BaseModel):
    ticks: int = 10
    interval: float = 0.3


@app.post("/")
async def tick(request: TickRequest) -> dict[str, int]:
    for number in range(1, request.ticks + 1):
        print(f"tick {number}", flush=True)
        await asyncio.sleep(request.interval)
    return {"ticks": request.ticks}
