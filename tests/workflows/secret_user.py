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
#   "CODEWORDS_API_KEY",
#   "CODEWORDS_RUNTIME_URI",
#   "API_TOKEN",
# ]
# ///
"""Test workflow: calls manage_user_secrets with its run key through the real codewords-client.

It declares API_TOKEN and asks for nothing more (no grants). It answers each operation's status,
detail, the names listed and the sha256 of a value it got: never a value, so that its own stored
response and log reveal none. ``test_secrets_api.secret_keeper`` registers this same body with
the ``secrets`` grant and no declared secret.
"""

import hashlib
from typing import Any

import httpx
from codewords_client import AsyncCodewordsClient
from fastapi import FastAPI
from pydantic import BaseModel

app = FastAPI(title="secret-user")


class Operations(BaseModel):
    operations: list[dict[str, Any]]


@app.post("/")
async def manage(request: Operations) -> list[dict[str, Any]]:
    answers = []
    async with AsyncCodewordsClient() as client:
        for operation in request.operations:
            try:
                response = await client.run("manage_user_secrets", operation)
            except httpx.HTTPStatusError as error:
                response = error.response
            body = response.json()
            answer: dict[str, Any] = {"status": response.status_code}
            if "detail" in body:
                answer["detail"] = body["detail"]
            if "secrets" in body:
                answer["names"] = sorted({entry["name"] for entry in body["secrets"]})
            if "value" in body:
                answer["value_sha256"] = hashlib.sha256(body["value"].encode()).hexdigest()
            answers.append(answer)
    return answers
