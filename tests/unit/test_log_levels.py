"""A run's log line gets the level it states, and none when it states none."""

from __future__ import annotations

import pytest

from core.log_levels import level_of_line


@pytest.mark.parametrize(
    ("line", "level"),
    [
        ("INFO:     Started server process [7]", "info"),  # uvicorn
        ("WARNING:root:disk almost full", "warning"),  # logging.basicConfig
        ("ERROR:    Exception in ASGI application", "error"),
        ("2026-12-03 10:00:00,123 CRITICAL db: gone", "critical"),
        ("2026-12-03T10:00:00Z [warning  ] slow answer", "warning"),  # structlog's console
        ('{"event": "x", "level": "debug"}', "debug"),  # structlog's JSON
        ("ValueError: boom", "error"),
        ("Traceback (most recent call last):", "error"),
        ("a plain line", None),
        ("an ERROR in the middle says nothing", None),
        ('  File "flow.py", line 3, in run', None),
        ('{"event": "no level"}', None),
    ],
)
def test_the_level_a_line_states(line: str, level: str | None) -> None:
    assert level_of_line(line) == level
