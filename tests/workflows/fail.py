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
"""Test workflow: always fails with an HTTP 500 and a known detail."""

from fastapi import FastAPI, HTTPException

app = FastAPI(title="fail")


@app.post("/")
async def fail() -> None:
    raise HTTPException(status_code=500, detail="boom: the workflow failed on purpose")
