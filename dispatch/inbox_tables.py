"""The inbox's tables (dispatch owns them; Alembic migration 0011), on the shared metadata.

``inbox_events`` holds every event an edge accepted, raw; ``inbox_triggers`` the triggers an
operator suspended (a trigger without a row is active). Event ids sort by arrival: the inbox
processor takes a conversation's events in id order.
"""

from __future__ import annotations

import secrets
import time

from sqlalchemy import JSON, Column, Index, Integer, LargeBinary, String, Table, Text

from core.tables import UTCDateTime, metadata

inbox_events = Table(
    "inbox_events",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("trigger", String(100), nullable=False),
    # Unique across triggers (the channel prefixes it); NULLs never collide: no dedupe for them.
    Column("dedupe_key", String(300), unique=True),
    Column("ordering_key", String(300), nullable=False),
    Column("status", String(16), nullable=False),
    Column("received_at", UTCDateTime(), nullable=False),
    Column("headers", JSON, nullable=False),
    # NULL once retention pruned the payload (``[inbox] body_max_age_days``) before the row.
    Column("body", LargeBinary),
    Column("attempts", Integer, nullable=False, default=0),
    Column("error", Text),
    Column("error_at", UTCDateTime()),
    Column("ignored_reason", Text),
    Column("run_ids", JSON),
    Column("replay_of", String(40)),
    # When the event reached its final state (processed, ignored, failed, discarded).
    Column("processed_at", UTCDateTime()),
    Column("lease_owner", String(64)),
    Column("lease_expires_at", UTCDateTime()),
    Column("next_attempt_at", UTCDateTime()),
    # Claims: pending events in arrival order; "is an earlier event of this key unfinished?".
    Index("ix_inbox_events_status_id", "status", "id"),
    Index("ix_inbox_events_ordering_key_status_id", "ordering_key", "status", "id"),
    # Listing and health per trigger, newest first.
    Index("ix_inbox_events_trigger_status_id", "trigger", "status", "id"),
    # Retention by age.
    Index("ix_inbox_events_received_at", "received_at"),
)

inbox_triggers = Table(
    "inbox_triggers",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("state", String(16), nullable=False),
    Column("changed_at", UTCDateTime(), nullable=False),
)

ACTIVE = "active"
SUSPENDED = "suspended"


class EventIds:
    """``evt_`` + the time in µs (13 hex digits) + 64 random bits, strictly increasing here.

    Like ``core.models.new_run_id``, but two events arriving in the same microsecond on this
    node still sort in arrival order (the processor's order per conversation is id order).
    """

    def __init__(self) -> None:
        self._last = 0

    def next(self) -> str:
        micros = max(time.time_ns() // 1000, self._last + 1)
        self._last = micros
        return f"evt_{micros:013x}{secrets.token_hex(8)}"
