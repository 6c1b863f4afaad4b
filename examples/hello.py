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
"""My First Workflow (the CodeWords getting-started greeting): POST / {"name": ...}.

It also answers a message from a channel (Slack, WhatsApp, email, the console's chat tester:
the DESIGN §9 object with ``text`` and ``sender``), which is how the demo answers them.
"""

import logging
import os

from fastapi import FastAPI
from pydantic import BaseModel

logging.basicConfig(level=os.environ.get("LOGLEVEL", "INFO"))
logger = logging.getLogger("hello")

app = FastAPI(title="My First CodeWords Workflow")


class Sender(BaseModel):
    id: str = ""
    name: str | None = None


class GreetingRequest(BaseModel):
    name: str | None = None
    text: str | None = None
    """a channel's message (with ``sender`` and ``channel``): greet who wrote it"""
    sender: Sender | None = None
    channel: str | None = None


class GreetingResponse(BaseModel):
    message: str


@app.post("/", response_model=GreetingResponse)
async def greet(request: GreetingRequest) -> GreetingResponse:
    if request.text is None:
        logger.info("greeting %s", request.name)
        return GreetingResponse(message=f"Hello {request.name or 'there'}!")
    who = request.sender.name or request.sender.id if request.sender else "there"
    logger.info("answering a %s message from %s", request.channel, who)
    # Markdown: each channel renders it its own way (Slack mrkdwn, WhatsApp, email text).
    return GreetingResponse(message=f"Hello **{who}**! You wrote:\n\n{request.text}")


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="0.0.0.0", port=int(os.environ.get("PORT", 8000)))
