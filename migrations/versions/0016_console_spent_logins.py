"""Spent console login links in the database (issue 13): a link signs in once on any node.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-04 21:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "console_spent_logins",
        sa.Column("nonce", sa.String(length=32), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("nonce"),
    )
    op.create_index(
        "ix_console_spent_logins_expires_at", "console_spent_logins", ["expires_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_console_spent_logins_expires_at", table_name="console_spent_logins")
    op.drop_table("console_spent_logins")
