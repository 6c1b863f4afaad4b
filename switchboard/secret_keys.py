"""Where the secrets master key comes from (README 'Secrets'), and how a rotation replaces it.

``server.secrets_key`` (with ``server.secrets_key_previous`` during a rotation) when set: the way
for several nodes, which must all hold the same key. Otherwise a key file in the data dir, made
once (0600) like ``secret.key``: ``secrets.key`` is the current key, and ``secrets.key.old`` the
one a rotation is replacing, read too until the rotation has committed and removed it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from core.errors import SwitchboardError
from dispatch.envelope import KeyRing, MasterKey
from switchboard.settings import Settings

KEY_FILE = "secrets.key"
OLD_KEY_FILE = "secrets.key.old"
NEW_KEY_FILE = "secrets.key.new"


class MasterKeyError(SwitchboardError):
    """The secrets master key cannot be used."""


def configured(settings: Settings) -> bool:
    return settings.server.secrets_key is not None


def load_key_ring(settings: Settings) -> KeyRing:
    """The master keys this node holds: the current one first, then any still accepted."""
    server = settings.server
    previous = (
        MasterKey.from_text(server.secrets_key_previous.get_secret_value())
        if server.secrets_key_previous is not None
        else None
    )
    if server.secrets_key is not None:
        return KeyRing.of(MasterKey.from_text(server.secrets_key.get_secret_value()), [previous])
    directory = server.data_dir
    current = _read(directory / KEY_FILE) or _create(directory / KEY_FILE)
    return KeyRing.of(
        MasterKey.from_text(current), [_key_or_none(directory / OLD_KEY_FILE), previous]
    )


def start_file_rotation(data_dir: Path) -> bool:
    """Put a new key in ``secrets.key``, the old one kept as ``secrets.key.old``: at every moment
    the two files hold both keys, so any process (re)reading them can open every row. Returns
    ``False`` when a rotation was already under way (``secrets.key.old`` exists): it is resumed
    with the key already in place."""
    current, old, new = data_dir / KEY_FILE, data_dir / OLD_KEY_FILE, data_dir / NEW_KEY_FILE
    if old.exists():
        return False
    if _read(current) is None:
        raise MasterKeyError(f"{current} does not exist: there is no master key to rotate")
    new.unlink(missing_ok=True)
    _write_new(new, secrets.token_urlsafe(32))
    os.link(current, old)
    os.replace(new, current)
    _sync_directory(data_dir)
    return True


def finish_file_rotation(data_dir: Path) -> None:
    """Retire the old key file once no data key is sealed under it."""
    (data_dir / OLD_KEY_FILE).unlink(missing_ok=True)
    _sync_directory(data_dir)


def _key_or_none(path: Path) -> MasterKey | None:
    text = _read(path)
    return MasterKey.from_text(text) if text else None


def _read(path: Path) -> str | None:
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    if not text:
        raise MasterKeyError(f"{path} is empty: restore the master key from a backup")
    return text


def _create(path: Path) -> str:
    """A new key file, whole or not at all: written aside, then linked into place (a process
    reading it meanwhile never sees it empty; a process that linked first wins)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    aside = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    _write_new(aside, secrets.token_urlsafe(32))
    try:
        with contextlib.suppress(FileExistsError):
            os.link(aside, path)
    finally:
        aside.unlink()
    text = _read(path)
    if text is None:
        raise MasterKeyError(f"{path} vanished while it was being created")
    return text


def _write_new(path: Path, text: str) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def _sync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
