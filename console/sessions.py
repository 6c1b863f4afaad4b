"""Console sessions: login links, the signed session cookie and its CSRF token.

A session is a signed cookie (HttpOnly, SameSite=Strict, expiring) naming the API key it acts
as; every request checks that key is still active, so revoking it ends its sessions. A login
link carries a short-lived signed token for the data dir's admin key, spent on first use (per
server process; its expiry bounds a replay elsewhere). Every change carries the session's CSRF
token (a hidden field, or the ``X-CSRF-Token`` header from the page's script).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import timedelta

from core.clock import Clock
from core.errors import Forbidden, Unauthorized
from core.security import Signer
from triggers.auth import KeyRole

COOKIE = "switchboard_console"
LOGIN_PREFIX = "sbl1"
SESSION_PREFIX = "sbs1"


@dataclass(frozen=True, slots=True)
class ConsoleSession:
    """Who is signed in: the API key the console acts as, until ``expires`` (unix time)."""

    key_id: str
    owner_id: str
    role: KeyRole
    expires: int
    nonce: str

    @property
    def is_admin(self) -> bool:
        return self.role is KeyRole.ADMIN


class Sessions:
    """Mints and reads login tokens and session cookies with the server's signer."""

    def __init__(self, signer: Signer, clock: Clock, *, session_seconds: int) -> None:
        self._signer = signer
        self._clock = clock
        self._session_seconds = session_seconds
        self._spent: dict[str, int] = {}
        """login token nonces used on this process -> their expiry"""

    def _now(self) -> int:
        return int(self._clock.now().timestamp())

    def login_token(self, key_id: str, *, valid_for: timedelta) -> str:
        """A token that signs in as key ``key_id`` once, within ``valid_for``."""
        expires = self._now() + int(valid_for.total_seconds())
        nonce = secrets.token_urlsafe(12)
        signature = self._signer.sign("console-login", key_id, str(expires), nonce)
        return f"{LOGIN_PREFIX}.{key_id}.{expires}.{nonce}.{signature}"

    def redeem_login_token(self, token: str) -> str:
        """The key id ``token`` signs in as; spends it. ``Unauthorized`` when it is not valid."""
        parts = token.split(".")
        if len(parts) != 5 or parts[0] != LOGIN_PREFIX or not parts[2].isdigit():
            raise Unauthorized("this login link is not valid; run `switchboard console`")
        _, key_id, expires, nonce, signature = parts
        now = self._now()
        if int(expires) < now:
            raise Unauthorized("this login link has expired; run `switchboard console`")
        if not self._signer.verify(signature, "console-login", key_id, expires, nonce):
            raise Unauthorized("this login link is not valid; run `switchboard console`")
        self._spent = {spent: until for spent, until in self._spent.items() if until >= now}
        if nonce in self._spent:
            raise Unauthorized("this login link was used already; run `switchboard console`")
        self._spent[nonce] = int(expires)
        return key_id

    def new_session(self, key_id: str, owner_id: str, role: KeyRole) -> tuple[str, int]:
        """The cookie value of a new session and its lifetime in seconds."""
        expires = self._now() + self._session_seconds
        nonce = secrets.token_urlsafe(16)
        fields = (key_id, owner_id, role.value, str(expires), nonce)
        signature = self._signer.sign("console-session", *fields)
        return ".".join((SESSION_PREFIX, *fields, signature)), self._session_seconds

    def read_session(self, cookie: str | None) -> ConsoleSession | None:
        """The session ``cookie`` proves, or ``None`` (absent, forged or expired)."""
        if not cookie:
            return None
        parts = cookie.split(".")
        if len(parts) != 7 or parts[0] != SESSION_PREFIX or not parts[4].isdigit():
            return None
        _, key_id, owner_id, role, expires, nonce, signature = parts
        if int(expires) < self._now() or role not in KeyRole.__members__.values():
            return None
        if not self._signer.verify(
            signature, "console-session", key_id, owner_id, role, expires, nonce
        ):
            return None
        return ConsoleSession(key_id, owner_id, KeyRole(role), int(expires), nonce)

    def csrf_token(self, session: ConsoleSession) -> str:
        return self._signer.sign("console-csrf", session.nonce)

    def check_csrf(self, session: ConsoleSession, given: str | None) -> None:
        """Refuse a change whose token is not this session's (a cross-site form, a stale tab)."""
        if not given or not self._signer.verify(given, "console-csrf", session.nonce):
            raise Forbidden("the form's CSRF token is missing or stale; reload the page")
