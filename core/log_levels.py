"""The level a run's log line states, read from the line itself.

A workflow's stderr carries everything its libraries log (uvicorn's ``INFO:`` lines included), so
the stream says nothing about severity; only what the line says does. No level is guessed for a
line that states none.
"""

from __future__ import annotations

import json
import re
from typing import Literal

LogLevel = Literal["critical", "error", "warning", "info", "debug"]

_NAMES: dict[str, LogLevel] = {
    "critical": "critical",
    "fatal": "critical",
    "error": "error",
    "err": "error",
    "warning": "warning",
    "warn": "warning",
    "info": "info",
    "debug": "debug",
    "trace": "debug",
}
_WORD = "CRITICAL|FATAL|ERROR|WARNING|WARN|INFO|DEBUG|TRACE"
# uvicorn ("INFO:     Started"), logging's default format ("WARNING:root:msg"), a level after a
# timestamp ("2026-12-03 10:00:00,123 ERROR name: msg"), structlog's console ("[warning  ] msg").
_STAMP = r"(?:\[?\d\S*\s+){0,2}?"  # a date, a time: tokens that start with a digit
_PREFIXED = re.compile(rf"^{_STAMP}\[?({_WORD})\]?(?::|\s|$)")
_BRACKETED = re.compile(rf"^{_STAMP}\[\s*(critical|error|warning|info|debug)\s*\]", re.I)
_EXCEPTION = re.compile(
    r"^(Traceback \(most recent call last\):|[A-Za-z_][\w.]*(Error|Exception):)"
)
_MAX_JSON = 64 * 1024


def level_of_line(message: str) -> LogLevel | None:
    """The level ``message`` names (its prefix, a JSON ``level``, an exception), else ``None``."""
    line = message.lstrip()
    if line.startswith("{") and len(line) <= _MAX_JSON:
        return _json_level(line)
    for pattern in (_PREFIXED, _BRACKETED):
        if found := pattern.match(line):
            return _NAMES[found.group(1).lower()]
    if _EXCEPTION.match(line):
        return "error"
    return None


def _json_level(line: str) -> LogLevel | None:
    try:
        record = json.loads(line)
    except ValueError:
        return None
    if not isinstance(record, dict):
        return None
    value = record.get("level", record.get("levelname", record.get("severity")))
    return _NAMES.get(value.lower()) if isinstance(value, str) else None
