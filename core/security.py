"""Keys and signatures: API key material, HMAC-signed capabilities (file URIs, run-scoped keys)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

REUSABLE_PREFIX = "cwk-"
ONE_TIME_PREFIX = "cwotk-"
RUN_KEY_PREFIX = "cwk-run."


def generate_api_key(*, one_time: bool) -> str:
    """A new key: the CodeWords prefix and 32 random bytes (so a plain sha256 is a safe hash)."""
    prefix = ONE_TIME_PREFIX if one_time else REUSABLE_PREFIX
    return prefix + secrets.token_urlsafe(32)


def _raw(text: str) -> bytes:
    """``text`` as bytes, whatever it holds: aiohttp gives header bytes that are not UTF-8 as
    surrogate escapes, which a plain ``encode()`` refuses (a 500 for any stranger's header)."""
    return text.encode("utf-8", "surrogateescape")


def hash_api_key(key: str) -> str:
    return hashlib.sha256(_raw(key)).hexdigest()


def display_prefix(key: str) -> str:
    """The part of a key that may be shown in listings and logs."""
    return key[: key.index("-") + 5]


class Signer:
    """HMAC-SHA256 signatures over ``|``-joined fields with one server secret."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("the signing secret must be at least 16 bytes")
        self._secret = secret

    def sign(self, *fields: str) -> str:
        message = _raw("|".join(fields))
        digest = hmac.new(self._secret, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def verify(self, signature: str, *fields: str) -> bool:
        # As bytes: compare_digest refuses str with non-ASCII characters (TypeError).
        return hmac.compare_digest(_raw(signature), self.sign(*fields).encode())

    def run_key(
        self, *, run_id: str, owner_id: str, expires: int, grants: Iterable[str] = ()
    ) -> str:
        """A key that acts for ``owner_id`` while run ``run_id`` lasts, minted per run.

        It needs no database row: the signature proves what it says (the authenticator also asks
        whether the run still runs; ``expires``, unix time, is the backstop). Its form is
        ``cwk-run.<run_id>.<owner_id>.<expires>.<grants>.<signature>``, grants joined by ``+``
        (``-`` for none).
        """
        granted = "+".join(sorted(grants)) or "-"
        signature = self.sign("run-key", run_id, owner_id, str(expires), granted)
        return f"{RUN_KEY_PREFIX}{run_id}.{owner_id}.{expires}.{granted}.{signature}"

    def read_run_key(self, key: str, *, now: int) -> RunKey | None:
        """What a valid, unexpired run key says, else ``None``."""
        parts = key[len(RUN_KEY_PREFIX) :].split(".")
        if len(parts) != 5 or not (parts[2].isascii() and parts[2].isdigit()):
            return None
        run_id, owner_id, expires, granted, signature = parts
        if int(expires) < now or not self.verify(
            signature, "run-key", run_id, owner_id, expires, granted
        ):
            return None
        grants = frozenset() if granted == "-" else frozenset(granted.split("+"))
        return RunKey(run_id=run_id, owner_id=owner_id, grants=grants)


@dataclass(frozen=True, slots=True)
class RunKey:
    """What a run key proves: the run it was minted for, that run's owner, its grants."""

    run_id: str
    owner_id: str
    grants: frozenset[str]
