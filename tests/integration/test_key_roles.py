"""Key roles: ``admin`` or ``member``, on the key and on the principal it authenticates as."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from core.clock import SystemClock
from core.db import Database
from core.errors import BadRequest, Forbidden
from core.security import Signer
from core.tables import owners
from dispatch.history import RunHistoryReader
from switchboard.cli import main
from switchboard.migrate import downgrade, upgrade
from tests.conftest import Live
from triggers.auth import Authenticator, KeyRole, KeyStore
from triggers.auth_tables import api_keys


def authenticator(database: Database) -> Authenticator:
    clock = SystemClock()
    return Authenticator(
        KeyStore(database, clock),
        Signer(b"s" * 32),
        clock,
        runs=RunHistoryReader(database),
        cache_seconds=0,
    )


async def test_a_key_is_a_member_unless_made_admin(database: Database) -> None:
    store = KeyStore(database, SystemClock())
    auth = authenticator(database)
    member_key, member = await store.create(owner_id="alice")
    admin_key, admin = await store.create(owner_id="alice", role=KeyRole.ADMIN)
    assert (member.role, admin.role) == (KeyRole.MEMBER, KeyRole.ADMIN)
    assert {info.id: info.role for info in await store.list()} == {
        member.id: KeyRole.MEMBER,
        admin.id: KeyRole.ADMIN,
    }
    as_admin = await auth.authenticate(f"Bearer {admin_key}")
    as_member = await auth.authenticate(f"Bearer {member_key}")
    assert as_admin.is_admin and not as_member.is_admin
    as_admin.require_admin("listing triggers")
    with pytest.raises(Forbidden) as refused:
        as_member.require_admin("listing triggers")
    assert refused.value.detail == "listing triggers needs an admin key (this key's role is member)"
    assert refused.value.status == 403


async def test_a_one_time_key_cannot_be_admin(database: Database) -> None:
    store = KeyStore(database, SystemClock())
    with pytest.raises(BadRequest, match="one-time key cannot be an admin key"):
        await store.create(one_time=True, role=KeyRole.ADMIN)
    key, info = await store.create(one_time=True)
    assert info.role is KeyRole.MEMBER
    principal = await authenticator(database).authenticate(f"Bearer {key}")
    with pytest.raises(Forbidden, match=r"needs an admin key \(a one-time key\)"):
        principal.require_admin("replaying an inbox event")


async def test_the_upgrade_keeps_the_bootstrap_key_admin_and_makes_the_rest_members(
    empty_database_url: str,
) -> None:
    database = Database(empty_database_url)
    await upgrade(database, "0010")
    now = datetime.now(UTC)
    async with database.write() as conn:
        for owner in ("default", "bob"):
            await conn.execute(owners.insert().values(id=owner, name=owner, created_at=now))
        for key_id, owner, name, one_time in (
            ("key_boot", "default", "admin", False),
            ("key_other", "default", "ci", False),
            ("key_bob", "bob", "admin", False),
            ("key_once", "default", "admin", True),
        ):
            await conn.execute(
                api_keys.insert().values(
                    id=key_id,
                    owner_id=owner,
                    name=name,
                    prefix="cwk-x",
                    key_hash=key_id.ljust(64, "0"),
                    one_time=one_time,
                    created_at=now,
                )
            )
    await upgrade(database)
    async with database.read() as conn:
        roles = dict((await conn.execute(select(api_keys.c.id, api_keys.c.role))).all())
    assert roles == {
        "key_boot": "admin",
        "key_other": "member",
        "key_bob": "member",
        "key_once": "member",
    }
    await downgrade(database, "0010")  # and back: the column goes, the keys stay
    async with database.read() as conn:
        assert (await conn.execute(select(api_keys.c.id))).scalars().all() != []
    await database.dispose()


async def test_the_demos_first_key_is_admin(live: Live) -> None:
    saved = (live.settings.server.data_dir / "admin.key").read_text().strip()
    principal = await live.services.auth.authenticate(f"Bearer {saved}")
    assert principal.is_admin
    test_key = await live.services.auth.authenticate(f"Bearer {live.key}")
    assert not test_key.is_admin, "keys.create makes members by default"


def test_keys_create_takes_a_role_and_keys_list_shows_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SWITCHBOARD_SERVER__DATA_DIR", str(tmp_path / "data"))
    # A command never creates the schema: that is `db upgrade`'s (or `serve`'s) job.
    assert main(["keys", "list"]) == 1
    assert "no revision (never migrated)" in capsys.readouterr().err
    assert main(["db", "upgrade"]) == 0
    assert main(["keys", "create", "--role", "admin", "--name", "ops"]) == 0
    made = capsys.readouterr().out
    assert " with role admin;" in made and made.splitlines()[-1].startswith("cwk-")
    assert main(["keys", "create", "--name", "ci"]) == 0
    assert " with role member;" in capsys.readouterr().out
    assert main(["keys", "create", "--one-time", "--role", "admin"]) == 1
    assert "one-time key cannot be an admin key" in capsys.readouterr().err
    assert main(["keys", "list"]) == 0
    rows = {line.split()[2]: line.split() for line in capsys.readouterr().out.splitlines()[1:]}
    assert (rows["ops"][5], rows["ci"][5]) == ("admin", "member")
