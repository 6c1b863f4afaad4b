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
# ///
"""Test workflow: makes the runtime API calls it is given with its own run key and reports each
answer; returns the key too, so a test can try it once the run has ended."""

import os
from typing import Any

import httpx
from fastapi import FastAPI
from pydantic import BaseModel

app = FastAPI(title="key-probe")


class Call(BaseModel):
    method: str = "POST"
    path: str
    json_body: Any = None


class Probe(BaseModel):
    calls: list[Call] = []


@app.post("/")
async def probe(request: Probe) -> dict[str, Any]:
    key = os.environ["CODEWORDS_API_KEY"]
    answers = []
    async with httpx.AsyncClient(
        base_url=os.environ["CODEWORDS_RUNTIME_URI"],
        headers={"Authorization": f"Bearer {key}"},
        timeout=60,
    ) as client:
        for call in request.calls:
            response = await client.request(call.method, call.path, json=call.json_body)
            try:
                body = response.json()
            except ValueError:
                body = response.text
            answers.append({"status": response.status_code, "body": body})
    return {"key": key, "answers": answers}
