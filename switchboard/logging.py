"""Log setup for the process: text or JSON lines on stderr."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from typing import Any

from core.redaction import InFlightSecrets


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_text:  # the redaction filter leaves the traceback there, redacted
            entry["exception"] = record.exc_text
        elif record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(level: str, form: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if form == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiosqlite and SQLAlchemy are chatty at DEBUG and may echo parameters (keys' hashes, bodies).
    logging.getLogger("aiosqlite").setLevel(logging.WARNING)
    logging.getLogger("sqlalchemy").setLevel(logging.WARNING)
    # aiosmtpd logs every command at INFO and every line of every mail at DEBUG.
    logging.getLogger("mail.log").setLevel(logging.WARNING)


class SecretRedaction(logging.Filter):
    """Masks the secret values of the runs in flight in every record a handler writes: the
    message with its arguments, and the traceback."""

    def __init__(self, secrets: InFlightSecrets) -> None:
        super().__init__()
        self._secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._secrets:
            return True
        message = record.getMessage()
        redacted = self._secrets.redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self._secrets.redact(record.exc_text)
        return True


def redact_server_logs(secrets: InFlightSecrets) -> Callable[[], None]:
    """Put :class:`SecretRedaction` on every handler of the root logger; returns its removal."""
    redaction = SecretRedaction(secrets)
    handlers = list(logging.getLogger().handlers)
    for handler in handlers:
        handler.addFilter(redaction)

    def remove() -> None:
        for handler in handlers:
            handler.removeFilter(redaction)

    return remove
