"""The strict JSON reader: depth counted without recursion, brackets in strings ignored."""

from __future__ import annotations

import pytest

from core.json_input import MAX_JSON_DEPTH, JsonRefused, nesting_depth_exceeds, parse_json


@pytest.mark.parametrize(
    ("raw", "deeper"),
    [
        (b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH, False),
        (b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1), True),
        (b'{"a":' * (MAX_JSON_DEPTH + 1) + b"1" + b"}" * (MAX_JSON_DEPTH + 1), True),
        (b'["' + b"[" * 1000 + b'"]', False),  # brackets inside a string do not nest
        (b'["\\"' + b"[" * 1000 + b'"]', False),  # nor after an escaped quote
        (b"[]" * 100_000, False),  # many brackets, shallow
        (b"[" * 100_000, True),  # unbalanced: still deep
    ],
    ids=["at-limit", "over-limit", "objects", "in-string", "escaped-quote", "wide", "unclosed"],
)
def test_nesting_depth(raw: bytes, deeper: bool) -> None:
    assert nesting_depth_exceeds(raw) is deeper


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (b'{"x": NaN}', "NaN is not a JSON value"),
        (b"[Infinity]", "Infinity is not a JSON value"),
        (b"-Infinity", "-Infinity is not a JSON value"),
        (b'"\xff"', "is not UTF-8"),
        (b"[" * 5000 + b"]" * 5000, "nested deeper than 128 levels"),
        (b"{", "is not valid JSON"),
    ],
)
def test_refused_with_the_reason(raw: bytes, problem: str) -> None:
    with pytest.raises(JsonRefused) as refused:
        parse_json(raw, what="the body")
    assert refused.value.status == 400
    assert refused.value.detail.startswith("the body ")
    assert problem in refused.value.detail


def test_plain_json_is_read_from_bytes_or_text() -> None:
    assert parse_json(b'{"a": [1, 2.5, "x[y"]}') == {"a": [1, 2.5, "x[y"]}
    assert parse_json('"é"') == "é"
