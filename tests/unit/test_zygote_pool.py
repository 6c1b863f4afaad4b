"""The server side of zygotes without starting one: the pool's restart on a changed environment,
its LRU eviction of idle zygotes, and cloning a run's trees all or none."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any, cast

import pytest

from dispatch.sandbox import zygote_pool as module
from dispatch.sandbox.bwrap import SandboxSettings
from dispatch.sandbox.cgroups import CgroupLayout
from dispatch.sandbox.zygote_pool import Zygote, ZygoteKey, ZygotePool, clone_trees


class FakeZygote:
    def __init__(self, key: ZygoteKey) -> None:
        self.key = key
        self.active = 0
        self.alive = True
        self.stopped = False

    async def stop(self) -> None:
        self.stopped = True


class Pool:
    """A ZygotePool whose zygotes are fakes and whose environments' fingerprints we set."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, cap: int) -> None:
        self.fingerprints: dict[Path, tuple[int, int]] = {}
        self.started: list[FakeZygote] = []
        settings = SandboxSettings(
            uid=65534,
            runs_dir=tmp_path / "runs",
            runtime_address=("127.0.0.1", 8000),
            startup_timeout=5,
            cgroups=cast(CgroupLayout, None),
            zygote_cap=cap,
        )
        self.pool = ZygotePool(settings, tmp_path / "zygotes")

        def key(python: Path) -> ZygoteKey:
            return ZygoteKey(python, self.fingerprints.setdefault(python, (1, 1)))

        async def start(_self: ZygotePool, key: ZygoteKey) -> Any:
            zygote = FakeZygote(key)
            self.started.append(zygote)
            return zygote

        monkeypatch.setattr(module, "zygote_key", key)
        monkeypatch.setattr(ZygotePool, "_start", start)

    async def acquire(self, python: str) -> FakeZygote:
        zygote = await self.pool.acquire(Path(python))
        assert zygote is not None
        return cast(FakeZygote, zygote)

    def release(self, zygote: FakeZygote) -> None:
        self.pool.release(cast(Zygote, zygote))


def stopped(zygote: FakeZygote) -> bool:  # a call: mypy does not narrow it across awaits
    return zygote.stopped


async def settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


async def test_a_zygote_is_reused_while_its_environment_is_unchanged(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    pool = Pool(monkeypatch, tmp_path, cap=2)
    first = await pool.acquire("/envs/a/bin/python")
    pool.release(first)
    again = await pool.acquire("/envs/a/bin/python")
    assert again is first
    assert len(pool.started) == 1
    assert first.active == 1


async def test_a_rebuilt_environment_restarts_its_zygote(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    pool = Pool(monkeypatch, tmp_path, cap=2)
    old = await pool.acquire("/envs/a/bin/python")
    pool.release(old)
    pool.fingerprints[Path("/envs/a/bin/python")] = (2, 7)  # new inode and mtime
    new = await pool.acquire("/envs/a/bin/python")
    await settle()
    assert new is not old
    assert new.key.fingerprint == (2, 7)
    assert old.stopped
    assert len(pool.pool) == 1


async def test_an_exited_zygote_is_restarted(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    pool = Pool(monkeypatch, tmp_path, cap=2)
    old = await pool.acquire("/envs/a/bin/python")
    pool.release(old)
    old.alive = False
    new = await pool.acquire("/envs/a/bin/python")
    assert new is not old
    assert len(pool.started) == 2


async def test_the_least_recently_used_idle_zygote_is_evicted_over_the_cap(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    pool = Pool(monkeypatch, tmp_path, cap=2)
    a = await pool.acquire("/envs/a/bin/python")
    pool.release(a)
    b = await pool.acquire("/envs/b/bin/python")
    pool.release(b)
    again = await pool.acquire("/envs/a/bin/python")  # a is now the most recently used
    pool.release(again)
    c = await pool.acquire("/envs/c/bin/python")
    await settle()
    assert b.stopped
    assert not a.stopped
    assert not c.stopped
    assert len(pool.pool) == 2


async def test_a_busy_zygote_is_not_evicted(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    pool = Pool(monkeypatch, tmp_path, cap=1)
    a = await pool.acquire("/envs/a/bin/python")  # not released: a run is using it
    b = await pool.acquire("/envs/b/bin/python")
    await settle()
    assert not stopped(a)
    assert not stopped(b)  # in use too: over the cap until one is idle
    pool.release(b)
    c = await pool.acquire("/envs/c/bin/python")
    await settle()
    assert b.stopped
    assert not a.stopped
    assert c.active == 1


def test_clone_trees_closes_the_clones_made_when_one_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    made: list[int] = []

    def clone(path: Path) -> int:
        if path.name == "bad":
            raise OSError(2, "open_tree: No such file or directory")
        fd = os.open(os.devnull, os.O_RDONLY)
        made.append(fd)
        return fd

    monkeypatch.setattr(module, "clone_tree", clone)
    with pytest.raises(OSError, match="open_tree"):
        clone_trees([Path("/work"), Path("/sockets"), Path("/bad")])
    assert len(made) == 2
    for fd in made:
        with pytest.raises(OSError):
            os.fstat(fd)
