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
# grants = ["schedules"]  # its run key may use schedule_runs (README 'Run keys')
# ///
"""Test workflow: calls another service through the runtime API with the real codewords-client."""

from typing import Any

from codewords_client import AsyncCodewordsClient
from fastapi import FastAPI
from pydantic import BaseModel

app = FastAPI(title="caller")


class CallRequest(BaseModel):
    service_id: str
    inputs: Any = None


@app.post("/")
async def call(request: CallRequest) -> dict[str, Any]:
    # Reads CODEWORDS_API_KEY and CODEWORDS_RUNTIME_URI from the environment the runtime set.
    async with AsyncCodewordsClient() as client:
        response = await client.run(request.service_id, request.inputs)
        response.raise_for_status()
        return {"inner": response.json()}
