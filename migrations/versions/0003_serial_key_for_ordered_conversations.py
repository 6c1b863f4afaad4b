"""Ordered conversations: runs.serial_key (claim order) and deliveries.target_key (send order).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 13:48:14.229990
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("serial_key", sa.String(length=300), nullable=True))
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("target_key", sa.String(length=300), nullable=True))
    # Deliveries made before ordering existed each count as their own target.
    op.execute("UPDATE deliveries SET target_key = 'legacy:' || id")
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.alter_column("target_key", existing_type=sa.String(length=300), nullable=False)
        batch_op.create_index(
            "ix_deliveries_target_key_status", ["target_key", "status"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_index("ix_deliveries_target_key_status")
        batch_op.drop_column("target_key")
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_column("serial_key")
