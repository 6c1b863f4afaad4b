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
"""Test workflow: downloads a URL (a signed file URI in the tests) and describes what it got."""

import hashlib

import httpx
from fastapi import FastAPI
from pydantic import BaseModel

app = FastAPI(title="fetch-file")


class FetchRequest(BaseModel):
    url: str


@app.post("/")
async def fetch(request: FetchRequest) -> dict[str, object]:
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.get(request.url)
        response.raise_for_status()
    return {
        "size": len(response.content),
        "sha256": hashlib.sha256(response.content).hexdigest(),
        "content_type": response.headers.get("content-type"),
    }
