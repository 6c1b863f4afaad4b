"""Workflow registry: ``service_id`` → versions of a PEP 723 FastAPI file and their environments.

Registering locks the file's dependencies and builds the environment up front, so that the run
path never calls ``uv``. The source lives in the database (any node can run any version) and is
written out under ``<data_dir>/workflows/<id>/v<version>/`` where it runs.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import ColumnElement, Select, select, update

from core.clock import Clock
from core.db import Database
from core.errors import EnvironmentNotBuilt, NotFound, WorkflowError
from core.models import DeclaredVariable, WorkflowLimits
from dispatch.environments import EnvironmentBuilder, python_of
from dispatch.pep723 import parse_script_metadata
from dispatch.tables import workflow_versions, workflows

SERVICE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
SOURCE_NAME = "main.py"
DEFAULT_LIMITS = WorkflowLimits()


@dataclass(frozen=True, slots=True)
class Workflow:
    """A workflow version ready to run (implements ``core.ports.ResolvedWorkflow``)."""

    service_id: str
    version: int
    source_path: Path
    python: Path
    limits: WorkflowLimits = DEFAULT_LIMITS
    declared_env: tuple[DeclaredVariable, ...] = ()
    """``[tool.env-checker] env_vars``: what a run of this version gets besides the runtime's."""


@dataclass(frozen=True, slots=True)
class WorkflowInfo:
    service_id: str
    version: int
    lock_hash: str
    updated_at: str
    declared_env: tuple[DeclaredVariable, ...] = ()


class WorkflowRegistry:
    """Registered user workflows. Built-in service names are reserved and cannot be registered."""

    def __init__(
        self,
        database: Database,
        clock: Clock,
        builder: EnvironmentBuilder,
        *,
        workflows_dir: Path,
        reserved: frozenset[str],
        cache_seconds: float = 5.0,
        default_limits: WorkflowLimits = DEFAULT_LIMITS,
    ) -> None:
        self._default_limits = default_limits
        self._db = database
        self._clock = clock
        self._builder = builder
        self._dir = workflows_dir
        self._reserved = reserved
        self._cache_seconds = cache_seconds
        self._known: dict[str, float] = {}
        self._written: set[tuple[str, int]] = set()

    async def add(self, source_path: Path, service_id: str | None = None) -> WorkflowInfo:
        """Register ``source_path`` as a new version of ``service_id`` (default: its stem)."""
        service_id = service_id or source_path.stem.replace("_", "-")
        if not SERVICE_ID.match(service_id):
            raise WorkflowError(
                f"invalid workflow id {service_id!r}: use letters, digits, '.', '_' and '-' (≤ 100)"
            )
        if service_id in self._reserved:
            raise WorkflowError(f"{service_id!r} is a built-in service and cannot be replaced")
        try:
            source = await asyncio.to_thread(source_path.read_text, encoding="utf-8")
        except OSError as exc:
            raise WorkflowError(f"cannot read workflow file {source_path}: {exc.strerror}") from exc
        metadata = parse_script_metadata(source, origin=str(source_path))
        lock = await self._builder.lock(metadata)
        await self._builder.ensure(lock)
        now = self._clock.now()
        async with self._db.write() as conn:
            current = (
                await conn.execute(
                    select(workflows.c.current_version).where(workflows.c.id == service_id)
                )
            ).scalar()
            version = 1 if current is None else current + 1
            if current is None:
                await conn.execute(
                    workflows.insert().values(
                        id=service_id, current_version=1, created_at=now, updated_at=now
                    )
                )
            else:
                await conn.execute(
                    update(workflows)
                    .where(workflows.c.id == service_id)
                    .values(current_version=version, updated_at=now, removed_at=None)
                )
            await conn.execute(
                workflow_versions.insert().values(
                    workflow_id=service_id,
                    version=version,
                    source=source,
                    source_hash=hashlib.sha256(source.encode()).hexdigest(),
                    lock=lock,
                    lock_hash=self._builder.lock_hash(lock),
                    settings={
                        "limits": metadata.limits,
                        "declared_env": [v.model_dump() for v in metadata.declared_env],
                    },
                    created_at=now,
                )
            )
        self._materialise(service_id, version, source)
        self._known[service_id] = time.monotonic() + self._cache_seconds
        return WorkflowInfo(
            service_id=service_id,
            version=version,
            lock_hash=self._builder.lock_hash(lock),
            updated_at=now.isoformat(),
            declared_env=metadata.declared_env,
        )

    async def needs_update(self, service_id: str, source: str) -> bool:
        """Whether ``source`` differs from the current version of ``service_id`` (or none)."""
        query = _current(workflow_versions.c.source_hash).where(workflows.c.id == service_id)
        async with self._db.read() as conn:
            current = (await conn.execute(query)).scalar()
        return bool(current != hashlib.sha256(source.encode()).hexdigest())

    async def remove(self, service_id: str) -> None:
        async with self._db.write() as conn:
            result = await conn.execute(
                update(workflows)
                .where(workflows.c.id == service_id, workflows.c.removed_at.is_(None))
                .values(removed_at=self._clock.now())
            )
        self._known.pop(service_id, None)
        if result.rowcount == 0:
            raise NotFound("workflow", service_id)

    async def list(self) -> list[WorkflowInfo]:
        query = _current(
            workflows.c.id,
            workflows.c.current_version,
            workflows.c.updated_at,
            workflow_versions.c.lock_hash,
        ).order_by(workflows.c.id)
        async with self._db.read() as conn:
            rows = (await conn.execute(query)).all()
        return [
            WorkflowInfo(
                service_id=row.id,
                version=row.current_version,
                lock_hash=row.lock_hash,
                updated_at=row.updated_at.isoformat(),
            )
            for row in rows
        ]

    async def exists(self, service_id: str) -> bool:
        expiry = self._known.get(service_id)
        if expiry is not None and expiry > time.monotonic():
            return True
        async with self._db.read() as conn:
            found = (
                await conn.execute(
                    select(workflows.c.id).where(
                        workflows.c.id == service_id, workflows.c.removed_at.is_(None)
                    )
                )
            ).first()
        if found is None:
            self._known.pop(service_id, None)
            return False
        self._known[service_id] = time.monotonic() + self._cache_seconds
        return True

    async def resolve(self, service_id: str, version: int | None = None) -> Workflow:
        """The current version (or ``version``: a replay of a run that ran it), with its
        environment. The run path: it never builds (no ``uv`` call), so a version whose
        environment is missing here raises :class:`EnvironmentNotBuilt` at once
        (re-registering, or :meth:`build`, makes it)."""
        columns = (
            workflow_versions.c.version,
            workflow_versions.c.source,
            workflow_versions.c.lock,
            workflow_versions.c.settings,
        )
        if version is None:
            query = _current(*columns).where(workflows.c.id == service_id)
        else:
            query = (
                select(*columns)
                .select_from(workflows)
                .join(workflow_versions, workflow_versions.c.workflow_id == workflows.c.id)
                .where(
                    workflows.c.id == service_id,
                    workflows.c.removed_at.is_(None),
                    workflow_versions.c.version == version,
                )
            )
        async with self._db.read() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            raise NotFound("workflow", service_id)
        env = await self._builder.built(row.lock)
        if env is None:
            raise EnvironmentNotBuilt(service_id)
        settings = row.settings or {}
        return Workflow(
            service_id=service_id,
            version=row.version,
            source_path=self._materialise(service_id, row.version, row.source),
            python=python_of(env),
            limits=WorkflowLimits.model_validate(
                {**self._default_limits.model_dump(), **settings.get("limits", {})}
            ),
            # Versions registered before issue 14 have no key: they declare nothing.
            declared_env=tuple(
                DeclaredVariable.model_validate(entry) for entry in settings.get("declared_env", [])
            ),
        )

    async def build(self, service_id: str) -> None:
        """Build the current version's environment on this node if it is missing (as
        registering does), without making a new version: for the demo's examples on start."""
        query = _current(workflow_versions.c.lock).where(workflows.c.id == service_id)
        async with self._db.read() as conn:
            lock = (await conn.execute(query)).scalar()
        if lock is None:
            raise NotFound("workflow", service_id)
        await self._builder.ensure(lock)

    def _materialise(self, service_id: str, version: int, source: str) -> Path:
        path = self._dir / service_id / f"v{version}" / SOURCE_NAME
        if (service_id, version) not in self._written:
            # Once per version and process: a version's source never changes.
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary = path.with_suffix(f".{os.getpid()}.tmp")
            temporary.write_text(source, encoding="utf-8")
            temporary.replace(path)
            self._written.add((service_id, version))
        return path


def _current(*columns: ColumnElement[Any]) -> Select[Any]:
    """``columns`` of every workflow that is not removed, joined with its current version."""
    return (
        select(*columns)
        .select_from(workflows)
        .join(
            workflow_versions,
            (workflow_versions.c.workflow_id == workflows.c.id)
            & (workflow_versions.c.version == workflows.c.current_version),
        )
        .where(workflows.c.removed_at.is_(None))
    )
