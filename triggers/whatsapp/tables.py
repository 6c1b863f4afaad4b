"""The WhatsApp channel's table, on the shared metadata (migration 0005 made it; unchanged).

switchboard/schema.py registers it with every other package's tables.
"""

from __future__ import annotations

from sqlalchemy import Column, ForeignKey, Integer, String, Table

from core.tables import BigId, UTCDateTime, metadata

whatsapp_messages = Table(
    "whatsapp_messages",
    metadata,
    # One row per message sent to Twilio (a reply may take several); status callbacks update it.
    Column("sid", String(64), primary_key=True),
    Column("delivery_id", BigId, ForeignKey("deliveries.id"), nullable=False, index=True),
    Column("part", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    # queued < sending < sent < delivered < read < failed/undelivered: a status only moves up.
    Column("status_rank", Integer, nullable=False),
    Column("error_code", String(16)),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
)
