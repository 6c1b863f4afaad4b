"""How the composition root builds the console's parts (it imports nothing of ``switchboard``)."""

from __future__ import annotations

from datetime import timedelta

from console.sessions import Sessions
from console.settings import ConsoleSettings
from core.clock import Clock
from core.security import Signer
from triggers.auth import KeyInfo, KeyRole, KeyStore


def console_sessions(signer: Signer, clock: Clock, settings: ConsoleSettings) -> Sessions:
    return Sessions(signer, clock, session_seconds=int(settings.session_hours * 3600))


async def operator_key(keys: KeyStore) -> KeyInfo | None:
    """The key a login link signs in as: the oldest active admin key (the data dir's own)."""
    for key in await keys.list():
        if key.role is KeyRole.ADMIN and key.revoked_at is None and not key.one_time:
            return key
    return None


async def login_url(
    sessions: Sessions, keys: KeyStore, base_url: str, *, valid_for: timedelta
) -> str | None:
    """A fresh one-time login link, or ``None`` when no admin key exists."""
    key = await operator_key(keys)
    if key is None:
        return None
    return f"{base_url}/login?token={sessions.login_token(key.id, valid_for=valid_for)}"
