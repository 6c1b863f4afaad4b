"""Redaction by value: the forms of a secret that are masked, and the server's log filter."""

from __future__ import annotations

import base64
import io
import json
import logging
from urllib.parse import quote, quote_plus

import pytest

from core.redaction import InFlightSecrets, Redactor, secret_forms
from switchboard.logging import JsonFormatter, SecretRedaction, redact_server_logs

VALUE = "xoxb-12/34+56 78&=="


@pytest.mark.parametrize(
    "shown",
    [
        VALUE,
        base64.b64encode(VALUE.encode()).decode(),
        base64.b64encode(VALUE.encode()).decode().rstrip("="),
        base64.urlsafe_b64encode(VALUE.encode()).decode(),
        quote(VALUE, safe=""),
        quote_plus(VALUE),
        quote(VALUE),
    ],
    ids=["plain", "base64", "base64-unpadded", "base64-urlsafe", "url", "url-plus", "url-path"],
)
def test_each_form_of_a_value_is_masked_inside_a_line(shown: str) -> None:
    assert Redactor([VALUE]).redact(f"before {shown} after") == "before *** after"


def test_a_short_value_is_masked_as_it_is_but_not_in_encoded_forms() -> None:
    redactor = Redactor(["abc123"])

    assert redactor.redact("key=abc123") == "key=***"
    assert secret_forms("abc123") == {"abc123"}


def test_each_line_of_a_multi_line_value_is_masked_on_its_own() -> None:
    value = "-----BEGIN KEY-----\nMIIEvQIBADANBgkq\nshort\n-----END KEY-----"
    redactor = Redactor([value])

    lines = [redactor.redact(line) for line in value.splitlines()]

    # "short" (under 8 characters) would mask ordinary words: it is left as it is.
    assert lines == ["***", "***", "short", "***"]


def test_the_longest_value_is_masked_whole() -> None:
    redactor = Redactor(["secret-value", "secret-value-longer"])

    assert redactor.redact("a secret-value-longer b") == "a *** b"


def test_nothing_to_redact_leaves_the_text_alone() -> None:
    assert Redactor([""]).redact("text") == "text"
    assert secret_forms("") == set()


def test_in_flight_values_are_masked_only_while_a_run_holds_them() -> None:
    in_flight = InFlightSecrets()

    with in_flight.holding(["first-secret"]):
        with in_flight.holding(["first-secret", "second-secret"]):
            assert in_flight.redact("first-secret second-secret") == "*** ***"
        assert in_flight.redact("first-secret second-secret") == "*** second-secret"

    assert in_flight.redact("first-secret") == "first-secret"


def test_the_server_log_filter_masks_message_arguments_and_tracebacks() -> None:
    in_flight = InFlightSecrets()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(SecretRedaction(in_flight))
    logger = logging.getLogger("tests.redaction")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        with in_flight.holding([VALUE]):
            logger.warning("run %s: got %s", "req_1", VALUE)
            try:
                raise RuntimeError(f"failed with {VALUE}")
            except RuntimeError:
                logger.exception("run %s: internal error", "req_1")
    finally:
        logger.removeHandler(handler)
        logger.propagate = True

    entries = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [entry["message"] for entry in entries] == [
        "run req_1: got ***",
        "run req_1: internal error",
    ]
    assert "RuntimeError: failed with ***" in entries[1]["exception"]
    assert VALUE not in stream.getvalue()


def test_redact_server_logs_covers_the_root_handlers_until_removed() -> None:
    in_flight = InFlightSecrets()
    handler = logging.StreamHandler(io.StringIO())
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        remove = redact_server_logs(in_flight)
        assert any(isinstance(f, SecretRedaction) for f in handler.filters)
        remove()
        assert handler.filters == []
    finally:
        root.removeHandler(handler)
