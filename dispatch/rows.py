"""Conversions between table rows and core models."""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import RowMapping

from core.models import LogEntry, RunRecord, RunStatus, Source


def run_from_row(row: RowMapping) -> RunRecord:
    return RunRecord(
        id=row["id"],
        owner_id=row["owner_id"],
        caller_id=row["caller_id"],
        service_id=row["service_id"],
        workflow_version=row["workflow_version"],
        path=row["path"],
        method=row["method"],
        status=RunStatus(row["status"]),
        source=Source(row["source"]),
        reply_target=row["reply_target"],
        correlation_id=row["correlation_id"],
        serial_key=row["serial_key"],
        context=row["context"],
        request_body=row["request_body"],
        response_status=row["response_status"],
        response_body=row["response_body"],
        response_content_type=row["response_content_type"],
        error=row["error"],
        attempts=row["attempts"],
        replay_of=row["replay_of"],
        created_at=row["created_at"],
        queued_at=row["queued_at"],
        started_at=row["started_at"],
        completed_at=row["completed_at"],
    )


def log_from_row(row: RowMapping) -> LogEntry:
    values: dict[str, Any] = dict(row)
    return LogEntry.model_validate(values)
