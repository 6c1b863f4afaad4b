"""``keys revoke``: by id, or by a displayed prefix only when it names one key."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import update

from core.clock import SystemClock
from core.db import Database
from core.errors import Conflict, NotFound
from switchboard.migrate import upgrade
from triggers.auth import KeyStore
from triggers.auth_tables import api_keys


@pytest.fixture
async def keys(database_url: str) -> AsyncIterator[tuple[KeyStore, Database]]:
    database = Database(database_url)
    await upgrade(database)
    yield KeyStore(database, SystemClock()), database
    await database.dispose()


async def test_a_prefix_two_keys_share_revokes_neither_and_names_both(
    keys: tuple[KeyStore, Database],
) -> None:
    store, database = keys
    _, first = await store.create(owner_id="alice")
    _, second = await store.create(owner_id="bob")
    async with database.write() as conn:  # 4 random characters: a collision happens
        await conn.execute(
            update(api_keys).where(api_keys.c.id == second.id).values(prefix=first.prefix)
        )
    with pytest.raises(Conflict) as refused:
        await store.revoke(first.prefix)
    assert first.id in refused.value.detail and second.id in refused.value.detail
    assert all(info.revoked_at is None for info in await store.list())
    assert await store.revoke(second.id) == second.id
    assert await store.revoke(first.prefix) == first.id  # the one active key left with it
    assert all(info.revoked_at is not None for info in await store.list())
    with pytest.raises(NotFound):
        await store.revoke(first.prefix)
