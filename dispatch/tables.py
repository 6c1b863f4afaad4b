"""Dispatch's tables: workflows and their versions, runs and their logs, reply deliveries and the
secret store, on the shared metadata (moved from ``core.tables``; the schema is unchanged, no
migration). Other packages reach them through ports (``core.ports``), never by importing this.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
)

from core.tables import BigId, UTCDateTime, metadata

workflows = Table(
    "workflows",
    metadata,
    Column("id", String(100), primary_key=True),
    Column("current_version", Integer, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Column("removed_at", UTCDateTime()),
)

workflow_versions = Table(
    "workflow_versions",
    metadata,
    Column("workflow_id", String(100), ForeignKey("workflows.id"), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("source", Text, nullable=False),
    Column("source_hash", String(64), nullable=False),
    Column("lock", Text, nullable=False),
    Column("lock_hash", String(64), nullable=False),
    Column("settings", JSON, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
)

runs = Table(
    "runs",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("owner_id", String(64), ForeignKey("owners.id"), nullable=False),
    Column("caller_id", String(64)),
    Column("service_id", String(100), nullable=False),
    Column("workflow_version", Integer),
    Column("path", String(500), nullable=False, default=""),
    Column("method", String(8), nullable=False, default="POST"),
    Column("status", String(16), nullable=False),
    Column("source", String(16), nullable=False),
    Column("reply_target", JSON(none_as_null=True)),
    Column("idempotency_key", String(300), unique=True),
    Column("correlation_id", String(200)),
    Column("serial_key", String(300)),
    Column("context", JSON(none_as_null=True)),
    Column("request_body", Text),
    Column("response_status", Integer),
    Column("response_body", LargeBinary),
    Column("response_content_type", String(200)),
    Column("error", Text),
    Column("attempts", Integer, nullable=False, default=0),
    Column("lease_owner", String(64)),
    Column("lease_expires_at", UTCDateTime()),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("queued_at", UTCDateTime()),
    Column("started_at", UTCDateTime()),
    Column("completed_at", UTCDateTime()),
    # From the last start to the end, written with the end: the runs list sorts by it.
    Column("duration_ms", Integer),
    Column("replay_of", String(40)),
    Index("ix_runs_status_queued_at", "status", "queued_at"),
    # The claim's two passes (schedules and conversations, then API runs) in arrival order.
    Index("ix_runs_status_source_queued_at", "status", "source", "queued_at"),
    Index("ix_runs_owner_created_at", "owner_id", "created_at"),
    # The runs list (issue 13): newest first, narrowed by one filter, keyset-paged on the id.
    Index("ix_runs_created_at_id", "created_at", "id"),
    Index("ix_runs_status_created_at", "status", "created_at"),
    Index("ix_runs_service_id_created_at", "service_id", "created_at"),
    Index("ix_runs_source_created_at", "source", "created_at"),
    Index("ix_runs_duration_ms_id", "duration_ms", "id"),
)

run_logs = Table(
    "run_logs",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("run_id", String(40), ForeignKey("runs.id"), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("stream", String(8), nullable=False),
    Column("message", Text, nullable=False),
    Index("ix_run_logs_run_id_id", "run_id", "id"),
)

deliveries = Table(
    "deliveries",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    # One delivery per run: a run has one reply target, and its reply is sent once.
    Column("run_id", String(40), ForeignKey("runs.id"), nullable=False, unique=True),
    Column("channel", String(16), nullable=False),
    Column("target", JSON, nullable=False),
    # channel:address. Deliveries to one target go out one at a time in id order (a chat's
    # replies arrive in the order of its messages, even across retries).
    Column("target_key", String(300), nullable=False),
    Column("payload", JSON, nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", UTCDateTime()),
    Column("last_error", Text),
    Column("provider_id", String(200)),
    # Parts of a multi-message reply already sent: a retry resumes after them.
    Column("progress", Integer, nullable=False, default=0, server_default="0"),
    Column("lease_expires_at", UTCDateTime()),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Index("ix_deliveries_status_next_attempt_at", "status", "next_attempt_at"),
    Index("ix_deliveries_target_key_status", "target_key", "status"),
)

# WhatsApp's 24-hour window (core.ports.ChatActivity) is read from the runs a chat's messages
# made (serial key ``whatsapp:<our number>:<user>``): a message and its run are one row.
Index("ix_runs_serial_key_created_at", runs.c.serial_key, runs.c.created_at)

# ---- secrets (dispatch/secret_store.py; issue 14) -----------------------------------------------

# One data key per owner, encrypted (AES-GCM) under a master key that never reaches the database;
# master_key_id names which one (a fingerprint), so a rotation can switch them one row at a time.
secret_keys = Table(
    "secret_keys",
    metadata,
    Column("owner_id", String(64), ForeignKey("owners.id"), primary_key=True),
    Column("master_key_id", String(16), nullable=False),
    Column("wrapped_key", LargeBinary, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("rotated_at", UTCDateTime()),
)

# One row: the master key new data keys are wrapped under. A rotation moves it in the same
# transaction that re-wraps every data key, so no node wraps under a key being retired.
secret_master = Table(
    "secret_master",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("master_key_id", String(16), nullable=False),
    Column("changed_at", UTCDateTime(), nullable=False),
)

secrets = Table(
    "secrets",
    metadata,
    Column("owner_id", String(64), ForeignKey("owners.id"), nullable=False),
    # "" rather than NULL for owner-wide: NULLs never collide in a primary key.
    Column("workflow_id", String(100), nullable=False),
    Column("name", String(128), nullable=False),
    # AES-GCM under the owner's data key, bound to (owner, workflow, name) as associated data.
    Column("ciphertext", LargeBinary, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Column("updated_by", String(64), nullable=False),
    PrimaryKeyConstraint("owner_id", "workflow_id", "name"),
)

# Who set, deleted or re-keyed what, when: never a value. Not tied to owners by a foreign key,
# so the trail outlives what it describes.
secret_events = Table(
    "secret_events",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("at", UTCDateTime(), nullable=False),
    Column("action", String(16), nullable=False),
    Column("actor", String(64), nullable=False),
    Column("owner_id", String(64)),
    Column("name", String(128)),
    Column("workflow_id", String(100)),
    Column("detail", String(300), nullable=False, default=""),
    Index("ix_secret_events_owner_id_id", "owner_id", "id"),
)
