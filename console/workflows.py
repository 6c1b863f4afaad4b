"""The Workflows page: each workflow's current version, lock hash and declared variables, and
deploying a new version by uploading its PEP 723 file (admin keys: a workflow serves every
owner)."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from aiohttp import web

from console.operations import admin_only
from console.render import back, changing, page, signed_in
from core.errors import BadRequest, SwitchboardError
from dispatch.registry import WorkflowInfo, WorkflowRegistry

MAX_SOURCE_BYTES = 1024 * 1024


async def workflows_page(request: web.Request) -> web.Response:
    signed = await signed_in(request)
    found = await signed.deps.workflows.list()
    return page(request, "workflows.html", signed, workflows=found, problem="")


async def deploy(request: web.Request) -> web.StreamResponse:
    """``POST /console/workflows`` (multipart: ``file``, optional ``service_id``)."""
    signed, form = await changing(request)
    admin_only(signed, "deploying a workflow")
    upload = (await request.post()).get("file")
    if not isinstance(upload, web.FileField):
        raise BadRequest("file: choose the workflow's .py file")
    source = upload.file.read(MAX_SOURCE_BYTES + 1)
    if len(source) > MAX_SOURCE_BYTES:
        raise BadRequest(f"file: larger than {MAX_SOURCE_BYTES} bytes")
    name = Path(upload.filename or "workflow.py").name
    service_id = form.get("service_id", "").strip() or None
    try:
        info = await _register(signed.deps.workflows, name, source, service_id)
    except SwitchboardError as exc:
        found = await signed.deps.workflows.list()
        return page(
            request, "workflows.html", signed, status=400, workflows=found, problem=exc.detail
        )
    raise back("/console/workflows", f"{info.service_id} v{info.version} deployed")


async def _register(
    registry: WorkflowRegistry, name: str, source: bytes, service_id: str | None
) -> WorkflowInfo:
    with tempfile.TemporaryDirectory(prefix="switchboard-upload-") as directory:
        path = Path(directory) / (name if name.endswith(".py") else f"{name}.py")
        await asyncio.to_thread(path.write_bytes, source)
        return await registry.add(path, service_id)
