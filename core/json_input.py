"""Strict JSON for everything that comes from outside: request bodies and workflow answers.

Python's ``json`` accepts ``NaN`` and ``Infinity`` (not JSON; echoed back, other parsers choke on
them) and recurses once per nesting level, so a body nested ~1,000 deep raises ``RecursionError``
here or in the next ``json.dumps``. The depth is checked first by a scan that does not recurse.
"""

from __future__ import annotations

import json
import re
from array import array
from itertools import accumulate
from typing import Any

from core.errors import BadRequest

MAX_JSON_DEPTH = 128
"""Nesting levels of arrays and objects accepted; far above any real payload."""

_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKETS = bytes(set(range(256)) - set(b"[]{}"))
# Opening brackets to +1, closing ones to -1 (0xFF as a signed byte).
_STEPS = bytes.maketrans(b"[]{}", b"\x01\xff\x01\xff")


class JsonRefused(BadRequest):
    """The text is not JSON this server accepts."""


def _refuse_constant(name: str) -> Any:
    raise JsonRefused(f"{name} is not a JSON value")


def nesting_depth_exceeds(raw: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether arrays/objects in ``raw`` nest deeper than ``limit`` (brackets in strings skipped).

    Runs in C (regex, translate, accumulate): ~0.15 s for 10 MB of brackets, no recursion.
    """
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False  # the common case: too few brackets to nest that deep
    brackets = _STRING.sub(b"", raw).translate(None, _NOT_BRACKETS)
    steps = array("b", brackets.translate(_STEPS))
    return max(accumulate(steps), default=0) > limit


def parse_json(raw: bytes | str, *, what: str = "the body", limit: int = MAX_JSON_DEPTH) -> Any:
    """``raw`` parsed: UTF-8, no ``NaN``/``Infinity``, at most ``limit`` levels deep.

    Raises :class:`JsonRefused` naming ``what`` and the problem.
    """
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    if nesting_depth_exceeds(data, limit):
        raise JsonRefused(f"{what} is nested deeper than {limit} levels")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise JsonRefused(f"{what} is not UTF-8: {exc.reason} at byte {exc.start}") from exc
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except JsonRefused as exc:
        raise JsonRefused(f"{what} is not valid JSON: {exc}") from exc
    except ValueError as exc:
        raise JsonRefused(f"{what} is not valid JSON: {exc}") from exc
    except RecursionError as exc:  # pragma: no cover - the scan above refuses these first
        raise JsonRefused(f"{what} is nested too deeply") from exc
