"""``core.workflow_catalog.WorkflowAdmin`` over the registry and its tables."""

from __future__ import annotations

import asyncio
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select

from core.db import Database
from core.errors import NotFound, WorkflowError
from core.workflow_catalog import WorkflowDetail, WorkflowSummary, WorkflowVersionView
from dispatch.pep723 import parse_script_metadata
from dispatch.registry import WorkflowRegistry
from dispatch.tables import workflow_versions, workflows


class WorkflowCatalog:
    """Lists, shows, deploys and removes workflows (implements ``WorkflowAdmin``)."""

    def __init__(self, database: Database, registry: WorkflowRegistry, scratch: Path) -> None:
        self._db = database
        self._registry = registry
        self._scratch = scratch
        """Where an uploaded file waits while it is locked and built (the data dir)."""

    async def workflows(self) -> list[WorkflowSummary]:
        return [
            WorkflowSummary(
                id=info.service_id,
                current_version=info.version,
                lock_hash=info.lock_hash,
                updated_at=datetime.fromisoformat(info.updated_at),
            )
            for info in await self._registry.list()
        ]

    async def workflow(self, workflow_id: str) -> WorkflowDetail:
        async with self._db.read() as conn:
            head = (
                (
                    await conn.execute(
                        select(workflows).where(
                            workflows.c.id == workflow_id, workflows.c.removed_at.is_(None)
                        )
                    )
                )
                .mappings()
                .first()
            )
            if head is None:
                raise NotFound("workflow", workflow_id)
            rows = (
                (
                    await conn.execute(
                        select(workflow_versions)
                        .where(workflow_versions.c.workflow_id == workflow_id)
                        .order_by(workflow_versions.c.version.desc())
                    )
                )
                .mappings()
                .all()
            )
        return WorkflowDetail(
            id=workflow_id,
            current_version=head["current_version"],
            created_at=head["created_at"],
            updated_at=head["updated_at"],
            versions=[_version(row) for row in rows],
        )

    async def deploy(self, workflow_id: str, source: str) -> WorkflowVersionView:
        parse_script_metadata(source, origin="the uploaded file")  # 400 before any uv call
        await asyncio.to_thread(self._scratch.mkdir, parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self._scratch) as directory:
            path = Path(directory) / "main.py"
            await asyncio.to_thread(path.write_text, source, encoding="utf-8")
            info = await self._registry.add(path, workflow_id)
        detail = await self.workflow(info.service_id)
        return next(v for v in detail.versions if v.version == info.version)

    async def remove(self, workflow_id: str) -> None:
        await self._registry.remove(workflow_id)


def _version(row: Any) -> WorkflowVersionView:
    settings = row["settings"] or {}
    try:
        metadata = parse_script_metadata(row["source"])
        dependencies, requires = list(metadata.dependencies), metadata.requires_python
    except WorkflowError:  # stored by an older version that read headers differently
        dependencies, requires = [], None
    return WorkflowVersionView(
        version=row["version"],
        lock_hash=row["lock_hash"],
        source_hash=row["source_hash"],
        dependencies=dependencies,
        requires_python=requires,
        limits=dict(settings.get("limits", {})),
        declared_env=list(settings.get("declared_env", [])),
        created_at=row["created_at"],
    )
