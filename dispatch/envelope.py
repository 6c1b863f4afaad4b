"""Envelope encryption for stored secrets (issue 14), with AES-256-GCM from ``cryptography``.

A value is sealed under its owner's data key; the data key is sealed under a master key that never
reaches the database. Each sealed blob is bound to what it belongs to by AES-GCM associated data
(the owner for a data key; owner, workflow and name for a value), so a row copied onto another
row fails to open instead of decrypting as someone else's secret. Master keys are named by a
fingerprint (``key_id``) stored beside each data key: a node knows which key a row needs, and a
missing or wrong key is reported as such, never as garbage.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

FORMAT = b"\x01"
"""First byte of every sealed blob: the layout (version, 12-byte nonce, ciphertext + tag)."""
NONCE_BYTES = 12
KEY_BYTES = 32

__all__ = ["InvalidTag", "KeyRing", "MasterKey", "new_data_key", "seal", "unseal"]


@dataclass(frozen=True, slots=True)
class MasterKey:
    """A master key: 32 bytes derived (HKDF-SHA256) from the configured text or the key file."""

    key_id: str
    aead: AESGCM = field(repr=False)

    @classmethod
    def from_text(cls, text: str) -> MasterKey:
        raw = HKDF(
            algorithm=hashes.SHA256(),
            length=KEY_BYTES,
            salt=None,
            info=b"switchboard secrets master key v1",
        ).derive(text.strip().encode())
        key_id = hashlib.sha256(b"switchboard secrets key id|" + raw).hexdigest()[:16]
        return cls(key_id=key_id, aead=AESGCM(raw))


@dataclass(frozen=True, slots=True)
class KeyRing:
    """The master key new data keys are sealed under, and every key this node may open with."""

    current: MasterKey
    accepted: tuple[MasterKey, ...] = ()
    """older keys still accepted for opening (a rotation in progress)"""

    @classmethod
    def of(cls, current: MasterKey, others: Iterable[MasterKey | None] = ()) -> KeyRing:
        accepted = tuple(key for key in others if key is not None and key.key_id != current.key_id)
        return cls(current=current, accepted=accepted)

    def get(self, key_id: str) -> MasterKey | None:
        for key in (self.current, *self.accepted):
            if key.key_id == key_id:
                return key
        return None

    @property
    def key_ids(self) -> list[str]:
        return [self.current.key_id, *(key.key_id for key in self.accepted)]


def new_data_key() -> bytes:
    return AESGCM.generate_key(bit_length=KEY_BYTES * 8)


def data_key_context(owner_id: str) -> bytes:
    return json.dumps(["switchboard data key", owner_id]).encode()


def value_context(owner_id: str, workflow_id: str, name: str) -> bytes:
    return json.dumps(["switchboard secret", owner_id, workflow_id, name]).encode()


def seal(aead: AESGCM, plaintext: bytes, context: bytes) -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    return FORMAT + nonce + aead.encrypt(nonce, plaintext, FORMAT + context)


def unseal(aead: AESGCM, blob: bytes, context: bytes) -> bytes:
    """The plaintext, or :class:`InvalidTag` for a wrong key, another row's blob, or tampering."""
    if len(blob) < 1 + NONCE_BYTES + 16 or blob[:1] != FORMAT:
        raise InvalidTag()
    nonce = blob[1 : 1 + NONCE_BYTES]
    return aead.decrypt(nonce, blob[1 + NONCE_BYTES :], FORMAT + context)
