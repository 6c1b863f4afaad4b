"""Secret names, values, sealed blobs and the master key setting (issue 14): no I/O."""

from __future__ import annotations

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from core.errors import BadRequest
from core.secret_records import check_name, check_value
from dispatch.envelope import KeyRing, MasterKey, new_data_key, seal, unseal, value_context
from switchboard.config import ConfigError, load_settings


@pytest.mark.parametrize("name", ["API_TOKEN", "_X", "A1", "X" * 128])
def test_environment_variable_names_are_accepted(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("api_token", "upper-case letters"),
        ("1TOKEN", "not starting with a digit"),
        ("API-TOKEN", "upper-case letters"),
        ("A B", "upper-case letters"),
        ("", "needs a name"),
        ("X" * 129, "longer than 128"),
        ("PORT", "set by the runtime"),
        ("CODEWORDS_API_KEY", "set by the runtime"),
        ("SWITCHBOARD_SERVER__SECRET_KEY", "Switchboard's own"),
    ],
)
def test_other_names_are_refused_saying_why(name: str, problem: str) -> None:
    with pytest.raises(BadRequest, match=problem):
        check_name(name)


def test_values_up_to_64_kib_and_never_empty() -> None:
    assert check_value("é" * 32768) == "é" * 32768  # 65536 bytes of UTF-8
    for value, problem in [
        ("é" * 32768 + "x", "65536 bytes"),
        ("", "cannot be empty"),
        ("a\0b", "NUL"),
        (b"bytes", "must be a string"),
    ]:
        with pytest.raises(BadRequest, match=problem):
            check_value(value)


def test_a_sealed_value_opens_only_where_it_was_sealed() -> None:
    data_key = AESGCM(new_data_key())
    here = value_context("team-a", "", "API_TOKEN")
    blob = seal(data_key, b"the value", here)
    assert b"the value" not in blob
    assert unseal(data_key, blob, here) == b"the value"
    elsewhere = [
        value_context("team-b", "", "API_TOKEN"),
        value_context("team-a", "monitor", "API_TOKEN"),
        value_context("team-a", "", "OTHER"),
    ]
    for context in elsewhere:
        with pytest.raises(InvalidTag):
            unseal(data_key, blob, context)
    with pytest.raises(InvalidTag):
        unseal(AESGCM(new_data_key()), blob, here)
    with pytest.raises(InvalidTag):
        unseal(data_key, blob[:-1] + bytes([blob[-1] ^ 1]), here)


def test_master_keys_are_named_by_a_fingerprint() -> None:
    first, again, other = (MasterKey.from_text(t) for t in ("a" * 40, "a" * 40 + "\n", "b" * 40))
    assert first.key_id == again.key_id != other.key_id
    assert "a" * 40 not in repr(first)
    ring = KeyRing.of(other, [first, None, other])
    assert ring.key_ids == [other.key_id, first.key_id]
    assert ring.get(first.key_id) is first and ring.get("0" * 16) is None


def test_a_short_master_key_is_refused_without_showing_it() -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings(None, server={"secrets_key": "short-but-secret"})
    assert "server.secrets_key" in refused.value.detail
    assert "at least 32 characters" in refused.value.detail
    assert "short-but-secret" not in refused.value.detail
