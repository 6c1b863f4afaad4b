"""The scheduler's tables: schedule definitions and the change counter the leader follows."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Integer,
    PrimaryKeyConstraint,
    String,
    Table,
)

from core.tables import UTCDateTime, metadata

schedules = Table(
    "schedules",
    metadata,
    # Ids are unique per owner (one owner's "daily" is not another's).
    Column("id", String(100), nullable=False),
    Column("owner_id", String(64), ForeignKey("owners.id"), nullable=False, index=True),
    Column("service_id", String(100), nullable=False),
    Column("cron", String(200), nullable=False),
    Column("timezone", String(64), nullable=False),
    Column("inputs", JSON(none_as_null=True)),
    Column("deliver_to", String(500)),
    Column("misfire_policy", String(16), nullable=False),
    Column("misfire_grace", Float, nullable=False),
    Column("overlap_policy", String(16), nullable=False),
    Column("jitter", Float, nullable=False),
    Column("paused", Boolean, nullable=False),
    # The value of schedule_changes.revision when the definition last changed: the leader
    # rebuilds the jobs whose revision moved.
    Column("revision", BigInteger, nullable=False),
    Column("next_fire_at", UTCDateTime()),
    Column("last_fire_at", UTCDateTime()),
    Column("last_run_id", String(40)),
    Column("fired_count", Integer, nullable=False, default=0),
    Column("skipped_count", Integer, nullable=False, default=0),
    Column("missed_count", Integer, nullable=False, default=0),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    # Made from the config's [[schedules]] (True), through an API (False), before 0009 (NULL).
    Column("from_config", Boolean),
    PrimaryKeyConstraint("owner_id", "id"),
)

# One row: bumped in every transaction that changes a schedule's definition. Writers serialise on
# it, so revisions are handed out in commit order; the leader polls it to follow changes.
schedule_changes = Table(
    "schedule_changes",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("revision", BigInteger, nullable=False),
)
