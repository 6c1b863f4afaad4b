"""Console sign-in tokens and session cookies (console/sessions.py), on a clock the test moves."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from console.sessions import Sessions
from core.errors import Forbidden, Unauthorized
from core.security import Signer
from triggers.auth import KeyRole


@dataclass
class MovingClock:
    moment: datetime

    def now(self) -> datetime:
        return self.moment


@pytest.fixture
def clock() -> MovingClock:
    return MovingClock(datetime(2026, 12, 3, 12, tzinfo=UTC))


@pytest.fixture
def sessions(clock: MovingClock) -> Sessions:
    return Sessions(Signer(b"s" * 32), clock, session_seconds=3600)


def test_a_login_link_signs_in_once(sessions: Sessions) -> None:
    token = sessions.login_token("key_1", valid_for=timedelta(minutes=15))
    assert sessions.redeem_login_token(token) == "key_1"
    with pytest.raises(Unauthorized, match="used already"):
        sessions.redeem_login_token(token)


def test_a_login_link_expires(sessions: Sessions, clock: MovingClock) -> None:
    token = sessions.login_token("key_1", valid_for=timedelta(minutes=15))
    clock.moment += timedelta(minutes=16)
    with pytest.raises(Unauthorized, match="expired"):
        sessions.redeem_login_token(token)


def test_a_login_link_for_another_key_is_refused(sessions: Sessions) -> None:
    token = sessions.login_token("key_1", valid_for=timedelta(minutes=15))
    with pytest.raises(Unauthorized, match="not valid"):
        sessions.redeem_login_token(token.replace("key_1", "key_2"))


def test_a_session_cookie_is_read_until_it_expires(sessions: Sessions, clock: MovingClock) -> None:
    cookie, age = sessions.new_session("key_1", "default", KeyRole.ADMIN)
    assert age == 3600
    session = sessions.read_session(cookie)
    assert session is not None and session.is_admin and session.key_id == "key_1"
    clock.moment += timedelta(seconds=3601)
    assert sessions.read_session(cookie) is None


def test_a_forged_role_makes_no_session(sessions: Sessions) -> None:
    cookie, _ = sessions.new_session("key_1", "team", KeyRole.MEMBER)
    assert sessions.read_session(cookie.replace(".member.", ".admin.")) is None


def test_the_csrf_token_is_the_sessions_own(sessions: Sessions) -> None:
    first = sessions.read_session(sessions.new_session("key_1", "team", KeyRole.MEMBER)[0])
    second = sessions.read_session(sessions.new_session("key_1", "team", KeyRole.MEMBER)[0])
    assert first is not None and second is not None
    sessions.check_csrf(first, sessions.csrf_token(first))
    with pytest.raises(Forbidden, match="CSRF"):
        sessions.check_csrf(first, sessions.csrf_token(second))
    with pytest.raises(Forbidden, match="CSRF"):
        sessions.check_csrf(first, None)
