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
"""Test workflow: writes lines of known levels, and one of none, to stderr and stdout."""

import logging
import os
import sys

from fastapi import FastAPI

logging.basicConfig(level=os.environ.get("LOGLEVEL", "INFO"))

app = FastAPI(title="log-levels")


@app.post("/")
async def write_lines() -> dict[str, bool]:
    logging.getLogger("levels").info("an info line")
    logging.warning("a warning line")
    print("a plain stderr line", file=sys.stderr, flush=True)
    print("a plain stdout line", flush=True)
    return {"ok": True}
