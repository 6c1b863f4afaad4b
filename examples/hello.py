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
"""My First Workflow (the CodeWords getting-started greeting): POST / {"name": ...}."""

import logging
import os

from fastapi import FastAPI
from pydantic import BaseModel

logging.basicConfig(level=os.environ.get("LOGLEVEL", "INFO"))
logger = logging.getLogger("hello")

app = FastAPI(title="My First CodeWords Workflow")


class GreetingRequest(BaseModel):
    name: str


class GreetingResponse(BaseModel):
    message: str


@app.post("/", response_model=GreetingResponse)
async def greet(request: GreetingRequest) -> GreetingResponse:
    logger.info("greeting %s", request.name)
    return GreetingResponse(message=f"Hello {request.name}!")


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="0.0.0.0", port=int(os.environ.get("PORT", 8000)))
