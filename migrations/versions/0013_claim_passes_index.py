"""The claim's index: queued runs per source in arrival order (issue 16, fair claiming).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03 12:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_runs_status_source_queued_at", "runs", ["status", "source", "queued_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_runs_status_source_queued_at", table_name="runs")
