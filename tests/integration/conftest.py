"""Fixtures shared by the integration tests (the top-level conftest has the live server)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.fakes.smtp_sink import SmtpSink


@pytest.fixture
async def sink() -> AsyncIterator[SmtpSink]:
    """The mail relay the server sends through: records every message it accepts."""
    relay = SmtpSink()
    await relay.start()
    yield relay
    await relay.stop()
