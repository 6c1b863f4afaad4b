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
"""Test workflow for the WhatsApp channel: takes an inbound message (DESIGN §9) and answers.

``sleep <s> <label>`` sleeps first (ordering tests); a message with attachments downloads each
through its signed URL and describes it; anything else is echoed.
"""

import asyncio
import hashlib
from typing import Any

import httpx
from fastapi import FastAPI, Request

app = FastAPI(title="whatsapp-bot")


@app.post("/")
async def answer(request: Request) -> dict[str, Any]:
    message = await request.json()
    text = message.get("text", "")
    if text.startswith("sleep "):
        await asyncio.sleep(float(text.split()[1]))
        return {"text": text}
    if message.get("attachments"):
        lines = []
        async with httpx.AsyncClient(timeout=30) as client:
            for attachment in message["attachments"]:
                response = await client.get(attachment["url"])
                response.raise_for_status()
                digest = hashlib.sha256(response.content).hexdigest()
                lines.append(f"{attachment['filename']} {len(response.content)} {digest}")
        return {"text": "\n".join(lines)}
    return {"text": text}
