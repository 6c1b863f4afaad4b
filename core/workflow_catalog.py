"""Workflows as operators see and deploy them (issue 13): the models of ``/api/v1/workflows``
and the port behind it (``dispatch/workflow_catalog.py`` implements it over the registry)."""

from __future__ import annotations

from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from core.clock import ApiTime


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class WorkflowVersionView(_Frozen):
    """One registered version: what its PEP 723 header declares and what it was locked to."""

    version: int
    lock_hash: str
    source_hash: str
    dependencies: list[str]
    requires_python: str | None
    limits: dict[str, Any] = Field(description="its [tool.switchboard] overrides")
    declared_env: list[dict[str, Any]] = Field(description="[tool.env-checker] env_vars")
    created_at: ApiTime


class WorkflowSummary(_Frozen):
    id: str
    current_version: int
    lock_hash: str
    updated_at: ApiTime


class WorkflowList(_Frozen):
    workflows: list[WorkflowSummary]


class WorkflowDetail(_Frozen):
    id: str
    current_version: int
    created_at: ApiTime
    updated_at: ApiTime
    versions: list[WorkflowVersionView] = Field(description="newest first")


class WorkflowAdmin(Protocol):
    """Registered workflows. ``deploy`` locks and builds (a failure raises ``WorkflowError``,
    400, naming what failed); the others raise ``NotFound`` for an unknown or removed id."""

    async def workflows(self) -> list[WorkflowSummary]: ...

    async def workflow(self, workflow_id: str) -> WorkflowDetail: ...

    async def deploy(self, workflow_id: str, source: str) -> WorkflowVersionView: ...

    async def remove(self, workflow_id: str) -> None: ...
