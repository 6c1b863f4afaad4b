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
"""examples/hello.py as CodeWords workflows are written: it imports its declared dependencies."""

import httpx
import structlog
from codewords_client import AsyncCodewordsClient
from fastapi import FastAPI
from pydantic import BaseModel

logger = structlog.get_logger()
CLIENT = (AsyncCodewordsClient, httpx)  # imported as a workflow does; not called here
app = FastAPI(title="client-greeter")


class Greeting(BaseModel):
    name: str


@app.post("/")
async def greet(greeting: Greeting) -> dict[str, str]:
    return {"message": f"Hello, {greeting.name}!"}
