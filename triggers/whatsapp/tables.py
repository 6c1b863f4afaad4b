"""The WhatsApp channel's tables, on the shared metadata (migration 0005 made it; unchanged).

switchboard/schema.py registers it with every other package's tables.
"""

from __future__ import annotations

from sqlalchemy import Column, ForeignKey, Integer, String, Table, UniqueConstraint

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

# Status callbacks that arrived before their message was recorded (message_log.py), keyed
# ``<sid>|<status>|<error>`` under source ``twilio-status``. Only WhatsApp uses it (moved from
# ``core.tables``; unchanged, no migration).
inbound_events = Table(
    "inbound_events",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("source", String(16), nullable=False),
    Column("dedupe_key", String(300), nullable=False),
    Column("run_id", String(40), ForeignKey("runs.id")),
    Column("received_at", UTCDateTime(), nullable=False),
    UniqueConstraint("source", "dedupe_key", name="uq_inbound_events_source_dedupe_key"),
)
