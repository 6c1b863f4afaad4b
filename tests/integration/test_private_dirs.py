"""The data dir is this uid's alone, and a per-instance $TMPDIR directory someone else made
first is refused rather than used."""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from aiohttp import web

from switchboard.app import create_app
from switchboard.datadir import UnsafeDirectory
from tests.conftest import LiveFactory


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


async def test_data_dir_files_are_readable_by_this_uid_only(
    live_factory: LiveFactory, tmp_path: Path, database_url: str
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o755)  # as an older version left it
    os.chmod(data_dir, 0o755)  # noqa: S103 - the old, too open mode
    sqlite = database_url.startswith("sqlite")
    # On SQLite, the default: the database in the data dir.
    live = await live_factory.start(server={"database_url": None} if sqlite else {})
    async with httpx.AsyncClient(base_url=live.url) as http:
        made = await http.post(
            "/file", params={"filename": "a.txt"}, headers={"Authorization": live.key}
        )
        uploaded = await http.put(made.json()["upload_uri"], content=b"private")
    assert uploaded.status_code == 200
    stored = await live.services.files.store("default", "b.txt", "text/plain", b"also private")
    assert mode(data_dir) == 0o700
    assert mode(data_dir / "secret.key") == 0o600
    assert mode(data_dir / "files") == 0o700
    for name in (made.json()["file_id"], stored[0]):
        assert mode(data_dir / "files" / name) == 0o600
    if sqlite:
        database = data_dir / "switchboard.db"
        assert mode(database) == 0o600
        assert mode(database.with_name("switchboard.db-wal")) == 0o600


def foreign_owner(path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("giving a directory to another uid needs root")
    path.mkdir(mode=0o700)
    os.chown(path, 65534, 65534)


def writable_by_others(path: Path) -> None:
    path.mkdir()
    os.chmod(path, 0o777)  # noqa: S103 - the attack under test


def symlink_elsewhere(path: Path) -> None:
    target = path.with_name(path.name + "-target")
    target.mkdir(mode=0o700)
    path.symlink_to(target)


@pytest.mark.parametrize("plant", [foreign_owner, writable_by_others, symlink_elsewhere])
@pytest.mark.parametrize("which", ["socket_dir", "runs_dir"])
async def test_a_tmp_dir_someone_else_made_first_is_refused(
    live_factory: LiveFactory, plant: Callable[[Path], None], which: str
) -> None:
    first = await live_factory.start()  # the names this data dir's server uses
    planted: Path = getattr(first.services, which)
    await live_factory.stop(first)
    shutil.rmtree(planted, ignore_errors=True)
    plant(planted)
    runner = web.AppRunner(create_app(first.settings), handle_signals=False)
    try:
        with pytest.raises(UnsafeDirectory) as refused:
            await runner.setup()
    finally:
        await runner.cleanup()
    assert str(planted) in refused.value.detail
