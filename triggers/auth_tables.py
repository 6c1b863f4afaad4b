"""The API keys table (triggers/auth.py), on the shared metadata (moved from ``core.tables``;
unchanged, no migration). switchboard/schema.py registers it.
"""

from __future__ import annotations

from sqlalchemy import Boolean, Column, ForeignKey, String, Table

from core.tables import UTCDateTime, metadata

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("owner_id", String(64), ForeignKey("owners.id"), nullable=False, index=True),
    Column("name", String(200), nullable=False),
    Column("prefix", String(16), nullable=False),
    # sha256 of the whole key: keys are 32 random bytes, so a fast hash is enough.
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("one_time", Boolean, nullable=False, default=False),
    # "admin" | "member" (triggers.auth.KeyRole); one-time keys are always "member".
    Column("role", String(16), nullable=False, server_default="member"),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("revoked_at", UTCDateTime()),
    Column("used_at", UTCDateTime()),
    Column("bound_run_id", String(40)),
)
