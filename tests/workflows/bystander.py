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
"""Test workflow: another owner's innocent workflow with hostile.py's dependencies (so the same
environment and the same zygote). It looks for what earlier runs left and says where it could
write."""

import os
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

app = FastAPI(title="bystander")

SKIPPED = ("/proc", "/sys", "/usr")  # kernel views, and the read-only system


class Look(BaseModel):
    marker: str


@app.post("/")
def look(request: Look) -> dict[str, Any]:
    """Every path whose name holds the marker, every writable directory in the whole view, and
    the pseudo-terminals open."""
    found, writable = [], []
    for root, dirs, files in os.walk("/"):
        dirs[:] = [name for name in dirs if os.path.join(root, name) not in SKIPPED]
        if os.access(root, os.W_OK):
            writable.append(root)
        found += [os.path.join(root, name) for name in dirs + files if request.marker in name]
    return {"found": found, "writable": writable, "ptys": sorted(os.listdir("/dev/pts"))}
