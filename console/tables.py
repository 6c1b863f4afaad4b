"""The console's table: login links already spent, so a link signs in once across every node."""

from __future__ import annotations

from sqlalchemy import Column, String, Table

from core.tables import UTCDateTime, metadata

console_spent_logins = Table(
    "console_spent_logins",
    metadata,
    # The token's random nonce (``secrets.token_urlsafe(12)``: 16 characters).
    Column("nonce", String(32), primary_key=True),
    # The token's own expiry: after it the token is refused anyway, so the row may go.
    Column("expires_at", UTCDateTime(), nullable=False, index=True),
)
