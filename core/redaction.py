"""Redaction by value: secret values (and their usual encodings) become ``***`` in log lines.

Used for the lines a run writes (``dispatch/workers.py``) and for the server's own log records
(``switchboard/logging.py``). Limits, documented in README "Secrets": encoded forms only for values
of :data:`MIN_ENCODED_LENGTH` characters or more (a short value's encodings would match ordinary
text), and only the encodings listed here; a value the workflow transforms otherwise stays visible.
"""

from __future__ import annotations

import base64
import re
import threading
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from urllib.parse import quote, quote_plus

MASK = "***"
MIN_ENCODED_LENGTH = 8
"""Values shorter than this are redacted as they are, not in encoded forms; a value's lines
(a value holding a newline) shorter than this are not redacted on their own."""


def secret_forms(value: str) -> set[str]:
    """The strings that give ``value`` away in a log line: the value, its base64 (standard and
    URL-safe, with and without padding) and URL-encoded forms, and each of its lines (a log line
    never holds a newline, so a multi-line value only ever shows line by line)."""
    if not value:
        return set()
    forms = {value}
    parts = [part for part in re.split(r"\r?\n|\r", value) if part]
    if len(parts) > 1:
        forms.update(part for part in parts if len(part) >= MIN_ENCODED_LENGTH)
    if len(value) >= MIN_ENCODED_LENGTH:
        raw = value.encode()
        for encoded in (base64.b64encode(raw), base64.urlsafe_b64encode(raw)):
            text = encoded.decode("ascii")
            forms.update({text, text.rstrip("=")})
        forms.update({quote(value, safe=""), quote_plus(value, safe=""), quote(value)})
    return forms


class Redactor:
    """Replaces every form of a set of values by :data:`MASK`; the longest form first, so that a
    value containing another is masked whole."""

    def __init__(self, values: Iterable[str] = ()) -> None:
        self._forms: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self.add(values)

    def add(self, values: Iterable[str]) -> None:
        for value in values:
            self._forms |= secret_forms(value)
        self._pattern = _pattern(self._forms)

    def redact(self, text: str) -> str:
        if self._pattern is None:
            return text
        return self._pattern.sub(MASK, text)


class InFlightSecrets:
    """The secret values of the runs in flight on this node, for the server's log filter.

    Thread-safe: log records are formatted on whatever thread logs them.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: Counter[str] = Counter()
        self._redactor = Redactor()

    @contextmanager
    def holding(self, values: Iterable[str]) -> Iterator[None]:
        """Redact ``values`` from the server's logs while the block runs."""
        held = [value for value in values if value]
        with self._lock:
            self._held.update(held)
            self._redactor = Redactor(self._held)
        try:
            yield
        finally:
            with self._lock:
                self._held.subtract(held)
                self._held = +self._held  # drop the values no run holds any more
                self._redactor = Redactor(self._held)

    def __bool__(self) -> bool:
        """Whether any run in flight holds a value (else the log filter has nothing to do)."""
        return bool(self._held)

    def redact(self, text: str) -> str:
        return self._redactor.redact(text)


def _pattern(forms: set[str]) -> re.Pattern[str] | None:
    if not forms:
        return None
    return re.compile("|".join(re.escape(form) for form in sorted(forms, key=len, reverse=True)))
