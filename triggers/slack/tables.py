"""The Slack channel's tables: workspaces installed through OAuth v2, and the OAuth state nonces.

On the one ``MetaData`` (``core.tables``), registered for Alembic by ``switchboard.schema``; the
schema is unchanged (the tables moved here from ``core.tables``: no migration).
"""

from __future__ import annotations

from sqlalchemy import JSON, Column, String, Table, Text, UniqueConstraint

from core.tables import BigId, UTCDateTime, metadata

slack_installations = Table(
    "slack_installations",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    # "" rather than NULL for a missing enterprise/team: NULLs never collide in a unique key.
    Column("enterprise_id", String(32), nullable=False, default=""),
    Column("team_id", String(32), nullable=False, default=""),
    Column("app_id", String(32)),
    Column("bot_user_id", String(32)),
    Column("bot_id", String(32)),
    Column("bot_token", Text),
    Column("installation", JSON, nullable=False),
    Column("installed_at", UTCDateTime(), nullable=False),
    UniqueConstraint("enterprise_id", "team_id", name="uq_slack_installations_workspace"),
)

slack_oauth_states = Table(
    "slack_oauth_states",
    metadata,
    Column("state", String(64), primary_key=True),
    Column("expires_at", UTCDateTime(), nullable=False),
)
