"""The Workflows page: each workflow's versions (lock hash, dependencies, limits, declared
variables) and deploying a new version by uploading its PEP 723 file (admin keys: a workflow
serves every owner). Through ``core.workflow_catalog.WorkflowAdmin`` only."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from console.operations import admin_only
from console.render import back, changing, page, signed_in
from core.errors import BadRequest, SwitchboardError

MAX_SOURCE_BYTES = 1024 * 1024


async def workflows_page(request: web.Request) -> web.Response:
    signed = await signed_in(request)
    found = await signed.deps.workflows.workflows()
    return page(request, "workflows.html", signed, workflows=found, problem="")


async def workflow_page(request: web.Request) -> web.Response:
    signed = await signed_in(request)
    detail = await signed.deps.workflows.workflow(request.match_info["workflow_id"])
    return page(request, "workflow.html", signed, workflow=detail)


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
    stem = Path(upload.filename or "workflow.py").stem.replace("_", "-")
    workflow_id = form.get("service_id", "").strip() or stem
    try:
        text = source.decode("utf-8")
        version = await signed.deps.workflows.deploy(workflow_id, text)
    except (UnicodeDecodeError, SwitchboardError) as exc:
        problem = exc.detail if isinstance(exc, SwitchboardError) else "file: not UTF-8 text"
        found = await signed.deps.workflows.workflows()
        return page(request, "workflows.html", signed, status=400, workflows=found, problem=problem)
    raise back("/console/workflows", f"{workflow_id} v{version.version} deployed")
