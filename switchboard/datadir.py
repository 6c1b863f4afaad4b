"""The server's own directories: the data dir (the database holds Slack bot tokens, the secret
key signs every capability) readable by this uid only, and the predictable per-instance
directories in ``$TMPDIR`` refused when someone else made them first.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

from sqlalchemy.engine import make_url

from core.errors import SwitchboardError

PRIVATE = 0o700
SQLITE_FILES = ("", "-wal", "-shm", "-journal")


class UnsafeDirectory(SwitchboardError):
    """A directory the server would use is not safely its own."""


def prepare_data_dir(data_dir: Path, database_url: str) -> None:
    """Create the data dir 0700 (tighten one an older version made 0755), and the SQLite
    database file 0600 before SQLite opens it (SQLite gives its -wal and -shm the same mode)."""
    data_dir.mkdir(mode=PRIVATE, parents=True, exist_ok=True)
    _tighten(data_dir, PRIVATE)
    for child in ("home", "files", "workflows"):
        (data_dir / child).mkdir(mode=PRIVATE, exist_ok=True)
    database = _sqlite_path(database_url)
    if database is None:
        return
    with contextlib.suppress(FileExistsError):
        os.close(os.open(database, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    for suffix in SQLITE_FILES:
        with contextlib.suppress(FileNotFoundError):
            _tighten(Path(f"{database}{suffix}"), 0o600)


def claim_directory(path: Path, mode: int) -> None:
    """Create ``path`` with ``mode``, or take the one there only if this uid owns it, it is a
    real directory and nobody else may write to it: ``$TMPDIR/switchboard-<instance>`` is a
    name anyone on the host can compute and make first, to read or swap our sockets."""
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=mode)
    info = path.lstat()
    if not stat.S_ISDIR(info.st_mode):
        raise UnsafeDirectory(f"{path} is not a directory (a symlink or file): remove it")
    if info.st_uid != os.geteuid():
        raise UnsafeDirectory(
            f"{path} belongs to uid {info.st_uid}, not to this server (uid {os.geteuid()}): "
            "someone else created it; remove it, or give the server its own TMPDIR"
        )
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UnsafeDirectory(
            f"{path} is writable by other users (mode {stat.S_IMODE(info.st_mode):o}): "
            "remove it, or give the server its own TMPDIR"
        )
    os.chmod(path, mode)


def _tighten(path: Path, mode: int) -> None:
    if path.stat().st_uid == os.geteuid() and stat.S_IMODE(path.stat().st_mode) != mode:
        os.chmod(path, mode)


def _sqlite_path(database_url: str) -> Path | None:
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return Path(url.database)
