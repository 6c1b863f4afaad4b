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
"""Test workflow: answers an HTML page with a script, and its own looser CSP."""

from fastapi import FastAPI
from fastapi.responses import HTMLResponse

app = FastAPI(title="html-page")

PAGE = "<html><body><script>fetch('/request/x').then(r => r.text())</script></body></html>"


@app.post("/")
async def page() -> HTMLResponse:
    return HTMLResponse(PAGE, headers={"Content-Security-Policy": "default-src *"})
