"""The runs list of the management API (issue 13): ``duration_ms`` and ``replay_of`` on runs,
and the indexes that answer a filtered first page in milliseconds with 200,000 runs.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-03 15:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXES = {
    "ix_runs_created_at_id": ["created_at", "id"],
    "ix_runs_status_created_at": ["status", "created_at"],
    "ix_runs_service_id_created_at": ["service_id", "created_at"],
    "ix_runs_source_created_at": ["source", "created_at"],
    "ix_runs_duration_ms_id": ["duration_ms", "id"],
}


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("duration_ms", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("replay_of", sa.String(length=40), nullable=True))
    # Runs finished before this revision get their duration from their times.
    if op.get_bind().dialect.name == "sqlite":
        elapsed = (
            "CAST(ROUND((julianday(completed_at) - julianday(started_at)) * 86400000) AS INTEGER)"
        )
    else:
        elapsed = "CAST(ROUND(EXTRACT(EPOCH FROM completed_at - started_at) * 1000) AS INTEGER)"
    op.execute(
        f"UPDATE runs SET duration_ms = {elapsed} "  # noqa: S608 (no input: a fixed expression)
        "WHERE started_at IS NOT NULL AND completed_at IS NOT NULL"
    )
    for name, columns in INDEXES.items():
        op.create_index(name, "runs", columns, unique=False)


def downgrade() -> None:
    for name in INDEXES:
        op.drop_index(name, table_name="runs")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("replay_of")
        batch.drop_column("duration_ms")
