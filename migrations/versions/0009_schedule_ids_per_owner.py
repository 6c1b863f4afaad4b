"""Schedule ids are unique per owner: the primary key becomes (owner_id, id), a schedule made
from ``[[schedules]]`` is marked ``from_config``, and scheduled runs' idempotency and serial keys
name the owner (``schedule:<owner>/<id>:…``) so two owners' ticks of one id never dedupe.

Rows made before this revision have ``from_config`` NULL: not known; the next start adopts the
config's entries among them (their owner is ``scheduler.owner``).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03 09:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_PREFIX = len("schedule:")


def upgrade() -> None:
    with op.batch_alter_table("schedules", schema=None) as batch_op:
        batch_op.add_column(sa.Column("from_config", sa.Boolean(), nullable=True))
        batch_op.drop_constraint("pk_schedules", type_="primary")
        batch_op.create_primary_key("pk_schedules", ["owner_id", "id"])
    for column in ("idempotency_key", "serial_key"):
        op.execute(
            f"UPDATE runs SET {column} = 'schedule:' || owner_id || '/' || "  # noqa: S608
            f"substr({column}, {_PREFIX + 1}) "
            f"WHERE source = 'schedule' AND {column} LIKE 'schedule:%'"
        )


def downgrade() -> None:
    shared = op.get_bind().execute(
        sa.text("SELECT id FROM schedules GROUP BY id HAVING count(*) > 1")
    )
    ids = [row[0] for row in shared]
    if ids:
        raise RuntimeError(
            f"cannot downgrade: schedule ids {ids} are used by more than one owner; "
            "delete or rename them first"
        )
    for column in ("idempotency_key", "serial_key"):
        op.execute(
            f"UPDATE runs SET {column} = 'schedule:' || "  # noqa: S608
            f"substr({column}, {_PREFIX + 2} + length(owner_id)) "
            f"WHERE source = 'schedule' AND {column} LIKE 'schedule:%' "
            f"AND substr({column}, {_PREFIX + 1}, length(owner_id) + 1) = owner_id || '/'"
        )
    with op.batch_alter_table("schedules", schema=None) as batch_op:
        batch_op.drop_constraint("pk_schedules", type_="primary")
        batch_op.create_primary_key("pk_schedules", ["id"])
        batch_op.drop_column("from_config")
