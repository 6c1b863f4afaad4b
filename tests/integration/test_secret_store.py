"""The secret store on both databases (issue 14): master key rotation with reads in flight, a lost
or wrong master key, rows that cannot be swapped."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Column, ColumnElement, Table, select, update

from core.clock import SystemClock
from core.db import Database
from core.errors import SecretsUnreadable
from dispatch.envelope import KeyRing, MasterKey
from dispatch.secret_store import SecretStore
from dispatch.tables import secret_keys
from dispatch.tables import secrets as secrets_table
from switchboard.config import load_settings
from switchboard.secret_keys import (
    KEY_FILE,
    OLD_KEY_FILE,
    finish_file_rotation,
    load_key_ring,
    start_file_rotation,
)
from triggers.auth import KeyStore

NAME = "API_TOKEN"


def node(database: Database, data_dir: Path, **server: Any) -> SecretStore:
    """A store as a server or CLI process on ``data_dir`` (and these settings) opens it."""
    settings = load_settings(None, server={"data_dir": str(data_dir), **server})
    return SecretStore(database, SystemClock(), lambda: load_key_ring(settings))


async def fill(database: Database, store: SecretStore, owners: list[str]) -> dict[str, str]:
    keys = KeyStore(database, SystemClock())
    values = {}
    for owner in owners:
        await keys.ensure_owner(owner)
        values[owner] = f"value-of-{owner}-{secrets.token_hex(8)}"
        await store.put(owner, NAME, values[owner], workflow_id=None, actor="test")
    return values


async def read_all(store: SecretStore, values: dict[str, str]) -> None:
    for owner, value in values.items():
        assert await store.values_for_run(owner, "wf", [NAME]) == {NAME: value}


async def test_rotation_keeps_every_value_readable_before_during_and_after(
    database: Database, tmp_path: Path
) -> None:
    server = node(database, tmp_path)  # started before the rotation: holds the old key only
    old = MasterKey.from_text((tmp_path / KEY_FILE).read_text())
    values = await fill(database, server, [f"owner-{n}" for n in range(40)])
    await read_all(server, values)

    # The switch begins: the new key is in secrets.key, the old one kept as secrets.key.old.
    assert start_file_rotation(tmp_path)
    joining = node(database, tmp_path)  # a process started now holds both
    assert joining.master_key_id != old.key_id
    await read_all(server, values)
    await read_all(joining, values)

    cli = node(database, tmp_path)
    rotation = asyncio.create_task(cli.rotate(actor="cli"))
    reads_while_rotating = 0

    async def reader(store: SecretStore) -> None:
        nonlocal reads_while_rotating
        while True:
            for owner, value in values.items():
                rotating = not rotation.done()
                assert await store.values_for_run(owner, "wf", [NAME]) == {NAME: value}
                reads_while_rotating += rotating
                if not rotating:
                    return

    readers = [asyncio.create_task(reader(store)) for store in (server, joining)]
    done = await rotation
    await asyncio.gather(*readers)  # re-raises any read that failed or was wrong
    finish_file_rotation(tmp_path)

    assert (done.rewrapped, done.data_keys, done.master_key_id) == (40, 40, joining.master_key_id)
    assert reads_while_rotating > 0, reads_while_rotating
    assert not (tmp_path / OLD_KEY_FILE).exists()
    await read_all(server, values)  # it reads the new key file when the rows name the new key
    await read_all(node(database, tmp_path), values)
    old_only = SecretStore(database, SystemClock(), lambda: KeyRing.of(old))
    with pytest.raises(SecretsUnreadable, match=f"master key {done.master_key_id}"):
        await old_only.values_for_run("owner-0", "wf", [NAME])
    [event] = await cli.audit(None, limit=1)
    assert (event.action, event.actor) == ("rotate-key", "cli")
    assert event.detail.startswith(f"40 of 40 data keys now under master key {done.master_key_id}")
    assert old.key_id in event.detail


async def test_configured_keys_rotate_without_a_window(database: Database, tmp_path: Path) -> None:
    first, second = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    not_restarted = node(database, tmp_path, secrets_key=first)
    values = await fill(database, not_restarted, ["owner-a"])

    # Rolling restart: this node has the new key and the old one as previous. A first secret
    # of a new owner is sealed under the key the database names (the old one), so the nodes
    # not restarted yet read it too.
    restarted = node(database, tmp_path, secrets_key=second, secrets_key_previous=first)
    values |= await fill(database, restarted, ["owner-b"])
    await read_all(not_restarted, values)
    await read_all(restarted, values)

    done = await restarted.rotate(actor="cli")
    assert (done.rewrapped, done.data_keys) == (2, 2)
    new_only = node(database, tmp_path, secrets_key=second)
    await read_all(new_only, values)
    values |= await fill(database, new_only, ["owner-c"])
    await read_all(restarted, values)
    assert await new_only.check_keys() is None
    with pytest.raises(SecretsUnreadable, match="does not have"):
        await not_restarted.values_for_run("owner-a", "wf", [NAME])
    warning = await not_restarted.check_keys()
    assert warning is not None and done.master_key_id in warning


async def test_a_lost_master_key_makes_values_unreadable_and_says_so(
    database: Database, tmp_path: Path
) -> None:
    before = node(database, tmp_path)
    values = await fill(database, before, ["owner-a"])
    (tmp_path / KEY_FILE).unlink()  # lost: the next start makes a new key file
    after = node(database, tmp_path)
    assert after.master_key_id != before.master_key_id

    with pytest.raises(SecretsUnreadable) as unreadable:
        await after.values_for_run("owner-a", "wf", [NAME])
    assert unreadable.value.status == 503
    assert unreadable.value.detail.startswith("secrets cannot be decrypted:")
    assert f"master key {before.master_key_id}" in unreadable.value.detail
    with pytest.raises(SecretsUnreadable):
        await after.put("owner-a", "OTHER", "v", workflow_id=None, actor="test")
    assert [info.name for info in await after.list_secrets("owner-a")] == [NAME]
    warning = await after.check_keys()
    assert warning is not None and before.master_key_id in warning
    assert values["owner-a"] == (await before.values_for_run("owner-a", "wf", [NAME]))[NAME]

    wrong = SecretStore(
        database,
        SystemClock(),
        # A key whose fingerprint matches but whose bytes differ cannot be made; what can
        # happen is a row naming the right key id and sealed under another: it fails to open.
        lambda: KeyRing(
            current=MasterKey(before.master_key_id, MasterKey.from_text("x" * 32).aead)
        ),
    )
    with pytest.raises(SecretsUnreadable, match="does not open with master key"):
        await wrong.values_for_run("owner-a", "wf", [NAME])


async def copy_blob(
    database: Database,
    column: Column[bytes],
    *,
    source: ColumnElement[bool],
    target: ColumnElement[bool],
) -> None:
    """Overwrite ``column`` of the ``target`` row with the ``source`` row's: a swapped blob."""
    table = column.table
    assert isinstance(table, Table)
    async with database.write() as conn:
        blob = (await conn.execute(select(column).where(source))).scalar_one()
        await conn.execute(update(table).where(target).values({column.name: blob}))


async def test_rows_cannot_be_swapped(database: Database, tmp_path: Path) -> None:
    store = node(database, tmp_path)
    await fill(database, store, ["owner-a", "owner-b"])
    await store.put("owner-a", "OTHER", "other-value", workflow_id=None, actor="test")
    await copy_blob(
        database,
        secrets_table.c.ciphertext,
        source=secrets_table.c.name == "OTHER",
        target=(secrets_table.c.owner_id == "owner-a") & (secrets_table.c.name == NAME),
    )
    with pytest.raises(SecretsUnreadable, match=f"stored value of {NAME} of owner owner-a"):
        await store.values_for_run("owner-a", "wf", [NAME])

    await copy_blob(
        database,
        secret_keys.c.wrapped_key,
        source=secret_keys.c.owner_id == "owner-b",
        target=secret_keys.c.owner_id == "owner-a",
    )
    with pytest.raises(SecretsUnreadable, match="data key of owner owner-a does not open"):
        await store.values_for_run("owner-a", "wf", ["OTHER"])


async def test_first_secrets_of_an_owner_at_once_share_one_data_key(
    database: Database, tmp_path: Path
) -> None:
    nodes = [node(database, tmp_path), node(database, tmp_path)]
    await KeyStore(database, SystemClock()).ensure_owner("owner-a")
    names = [f"TOKEN_{n}" for n in range(8)]
    await asyncio.gather(
        *(
            nodes[n % 2].put("owner-a", name, f"value-{name}", workflow_id=None, actor="test")
            for n, name in enumerate(names)
        )
    )
    for store in nodes:
        assert await store.values_for_run("owner-a", "wf", names) == {
            name: f"value-{name}" for name in names
        }
