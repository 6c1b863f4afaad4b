"""The ``[console]`` settings section."""

from __future__ import annotations

from pydantic import Field

from core.sections import Section


class ConsoleSettings(Section):
    session_hours: float = Field(
        default=12.0, gt=0, le=24 * 30, description="how long a console sign-in lasts"
    )
    login_link_minutes: float = Field(
        default=15.0,
        gt=0,
        le=24 * 60,
        description="how long a login link of `switchboard console` stays valid (it works once)",
    )
