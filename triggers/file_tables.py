"""The uploaded files table (triggers/files.py), on the shared metadata (moved from
``core.tables``; unchanged, no migration). switchboard/schema.py registers it.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, ForeignKey, String, Table

from core.tables import UTCDateTime, metadata

files = Table(
    "files",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("owner_id", String(64), ForeignKey("owners.id"), nullable=False, index=True),
    Column("filename", String(300), nullable=False),
    Column("content_type", String(200)),
    Column("size", BigInteger),
    Column("sha256", String(64)),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("uploaded_at", UTCDateTime()),
)
