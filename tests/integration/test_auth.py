"""Key verification against a real database: caching, single-flight lookups, one-time keys."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from core.clock import SystemClock
from core.db import Database
from core.errors import Unauthorized
from core.security import Signer
from dispatch.history import RunHistoryReader
from dispatch.tables import runs
from switchboard.migrate import upgrade
from triggers.auth import Authenticator, KeyStore, Principal


class CountingKeyStore(KeyStore):
    """The real store, counting how often it is asked."""

    lookups = 0

    async def find(self, key: str) -> Principal | None:
        self.lookups += 1
        return await super().find(key)


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[CountingKeyStore]:
    database = Database(database_url)
    await upgrade(database)
    yield CountingKeyStore(database, SystemClock())
    await database.dispose()


def authenticator(store: KeyStore, cache_seconds: float) -> Authenticator:
    return Authenticator(
        store,
        Signer(b"x" * 32),
        SystemClock(),
        runs=RunHistoryReader(store._db),
        cache_seconds=cache_seconds,
    )


async def test_concurrent_requests_share_one_lookup(store: CountingKeyStore) -> None:
    key, info = await store.create(name="busy")
    auth = authenticator(store, cache_seconds=60)
    principals = await asyncio.gather(*(auth.authenticate(f"Bearer {key}") for _ in range(50)))
    assert {p.key_id for p in principals} == {info.id}
    assert store.lookups == 1
    await auth.authenticate(key)
    assert store.lookups == 1  # cached


async def test_unknown_key_is_refused_every_time(store: CountingKeyStore) -> None:
    auth = authenticator(store, cache_seconds=60)
    for _ in range(2):
        with pytest.raises(Unauthorized):
            await auth.authenticate("cwk-unknown")
    assert store.lookups == 2  # failures are not cached


async def test_one_time_key_is_spent_once(store: CountingKeyStore) -> None:
    key, _ = await store.create(one_time=True)
    auth = authenticator(store, cache_seconds=60)
    principal = await auth.authenticate(key)
    await auth.authorise_start(principal, "req_a", provisioned=False)
    with pytest.raises(Unauthorized):
        await auth.authorise_start(await auth.authenticate(key), "req_b", provisioned=False)
    bound = await auth.authenticate(key)
    assert bound.bound_run_id == "req_a"
    auth.authorise_read(bound, "req_a")
    with pytest.raises(Unauthorized):
        auth.authorise_read(bound, "req_b")


async def test_run_key_acts_for_its_owner_until_it_expires(store: CountingKeyStore) -> None:
    signer = Signer(b"y" * 32)
    auth = Authenticator(
        store, signer, SystemClock(), runs=RunHistoryReader(store._db), cache_seconds=0
    )
    await running_run(store, "req_1", "alice")
    now = int(SystemClock().now().timestamp())
    valid = signer.run_key(run_id="req_1", owner_id="alice", expires=now + 60)
    principal = await auth.authenticate(valid)
    assert (principal.owner_id, principal.caller_id) == ("alice", "req_1")
    expired = signer.run_key(run_id="req_1", owner_id="alice", expires=now - 1)
    forged = valid.replace("alice", "mallory")
    for key in (expired, forged):
        with pytest.raises(Unauthorized):
            await auth.authenticate(key)


async def running_run(store: KeyStore, run_id: str, owner_id: str) -> None:
    """A run row in state ``running``: a run key acts only while its run runs."""
    await store.ensure_owner(owner_id)
    async with store._db.write() as conn:
        await conn.execute(
            runs.insert().values(
                id=run_id,
                owner_id=owner_id,
                service_id="echo",
                status="running",
                source="api",
                created_at=SystemClock().now(),
            )
        )
