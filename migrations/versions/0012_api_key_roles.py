"""API keys get a role: ``admin`` or ``member`` (issue 12, the operator's surfaces).

Every key made before this revision becomes ``member``, except the demo's bootstrap key: the
reusable key of owner ``default`` named ``admin`` (what ``ensure_admin_key`` creates, saved in
``<data_dir>/admin.key``) stays the admin key it was meant to be. Any other key can be made admin
again only by creating a new one (``switchboard keys create --role admin``).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03 12:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("role", sa.String(length=16), server_default="member", nullable=False)
        )
    api_keys = sa.table(
        "api_keys",
        sa.column("owner_id", sa.String),
        sa.column("name", sa.String),
        sa.column("one_time", sa.Boolean),
        sa.column("role", sa.String),
    )
    op.execute(
        api_keys.update()
        .where(
            api_keys.c.owner_id == "default",
            api_keys.c.name == "admin",
            api_keys.c.one_time == sa.false(),
        )
        .values(role="admin")
    )


def downgrade() -> None:
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_column("role")
