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
"""Test workflow: answers ``{"bytes": n}`` with n bytes, streamed in 64 KiB chunks (no length)."""

from collections.abc import Iterator

from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

app = FastAPI(title="big_answer")
CHUNK = b"x" * 65536


class Size(BaseModel):
    bytes: int


@app.post("/")
async def big_answer(size: Size) -> StreamingResponse:
    def chunks() -> Iterator[bytes]:
        left = size.bytes
        while left > 0:
            yield CHUNK[: min(left, len(CHUNK))]
            left -= len(CHUNK)

    return StreamingResponse(chunks(), media_type="application/octet-stream")
