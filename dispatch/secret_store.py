"""The secret store (issue 14): values encrypted at rest, a data key per owner, master key rotation.

Implements ``core.ports.SecretsManager`` (and so ``SecretValues``, which runs read through). The
database holds only sealed blobs (``dispatch.envelope``); the master keys come from the composition
root through ``load_keys``, which is asked again when a row names a key this node does not hold
(another process rotated: the new key file is already in place). Values exist in plain text only
in memory, only on their way in or out, and are never logged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from core.clock import Clock
from core.db import Database
from core.errors import NotFound, SecretsUnreadable
from core.secret_records import SecretEvent, SecretInfo, check_name, check_value
from dispatch.envelope import (
    InvalidTag,
    KeyRing,
    MasterKey,
    data_key_context,
    new_data_key,
    seal,
    unseal,
    value_context,
)
from dispatch.tables import (
    runs,
    secret_events,
    secret_keys,
    secret_master,
    secrets,
    workflow_versions,
    workflows,
)

logger = logging.getLogger(__name__)

OWNER_WIDE = ""
MISSING_KEY_RECHECK_SECONDS = 5.0
"""How often a lookup may look again for a master key this node does not have."""
STATE_ROW = 1
UNREADABLE_HINT = (
    "server.secrets_key (or <data_dir>/secrets.key) is missing or wrong; every node needs the "
    "same master key, and a rotation needs the old one until `switchboard secrets rotate-key` "
    "has finished"
)


@dataclass(frozen=True, slots=True)
class Rotation:
    """What ``rotate`` did."""

    master_key_id: str
    rewrapped: int
    data_keys: int


class SecretStore:
    """Secrets of every owner in the database, sealed; see the module docstring."""

    def __init__(self, database: Database, clock: Clock, load_keys: Callable[[], KeyRing]) -> None:
        self._db = database
        self._clock = clock
        self._load_keys = load_keys
        self._keys = load_keys()
        self._missing: dict[str, datetime] = {}
        """master key ids found missing, and when to look for each again"""

    @property
    def master_key_id(self) -> str:
        """The fingerprint of this node's current master key (safe to show)."""
        return self._keys.current.key_id

    # ---- reading --------------------------------------------------------------------------

    async def values_for_run(
        self, owner_id: str, workflow_id: str, names: Collection[str]
    ) -> Mapping[str, str]:
        wanted = sorted(set(names))
        if not wanted:
            return {}
        query = (
            select(
                secrets.c.workflow_id,
                secrets.c.name,
                secrets.c.ciphertext,
                secret_keys.c.master_key_id,
                secret_keys.c.wrapped_key,
            )
            .join(secret_keys, secret_keys.c.owner_id == secrets.c.owner_id)
            .where(
                secrets.c.owner_id == owner_id,
                secrets.c.name.in_(wanted),
                secrets.c.workflow_id.in_({workflow_id, OWNER_WIDE}),
            )
        )
        async with self._db.read() as conn:
            rows = (await conn.execute(query)).all()
        if not rows:
            return {}
        data_key = self._open_data_key(owner_id, rows[0].master_key_id, rows[0].wrapped_key)
        found: dict[str, str] = {}
        # Owner-wide first, so that a value scoped to this workflow overwrites it.
        for row in sorted(rows, key=lambda r: r.workflow_id != OWNER_WIDE):
            found[row.name] = self._open_value(data_key, owner_id, row)
        return found

    async def get(self, owner_id: str, name: str, *, workflow_id: str | None) -> str | None:
        values = await self.values_for_run(owner_id, workflow_id or OWNER_WIDE, [check_name(name)])
        return values.get(name)

    async def list_secrets(self, owner_id: str | None) -> list[SecretInfo]:
        query = select(
            secrets.c.owner_id,
            secrets.c.name,
            secrets.c.workflow_id,
            secrets.c.created_at,
            secrets.c.updated_at,
            secrets.c.updated_by,
        ).order_by(secrets.c.owner_id, secrets.c.name, secrets.c.workflow_id)
        if owner_id is not None:
            query = query.where(secrets.c.owner_id == owner_id)
        async with self._db.read() as conn:
            rows = (await conn.execute(query)).all()
        return [
            SecretInfo(
                owner_id=row.owner_id,
                name=row.name,
                workflow_id=row.workflow_id or None,
                created_at=row.created_at,
                updated_at=row.updated_at,
                updated_by=row.updated_by,
            )
            for row in rows
        ]

    async def audit(self, owner_id: str | None, *, limit: int = 100) -> list[SecretEvent]:
        query = select(secret_events).order_by(secret_events.c.id.desc()).limit(limit)
        if owner_id is not None:
            query = query.where(secret_events.c.owner_id == owner_id)
        async with self._db.read() as conn:
            rows = (await conn.execute(query)).all()
        return [
            SecretEvent(
                at=row.at,
                action=row.action,
                actor=row.actor,
                owner_id=row.owner_id,
                name=row.name,
                workflow_id=row.workflow_id,
                detail=row.detail,
            )
            for row in rows
        ]

    async def declared_by_run(self, run_id: str, owner_id: str) -> tuple[str, frozenset[str]]:
        query = (
            select(runs.c.service_id, workflow_versions.c.settings)
            .join(
                workflow_versions,
                (workflow_versions.c.workflow_id == runs.c.service_id)
                & (workflow_versions.c.version == runs.c.workflow_version),
            )
            .where(runs.c.id == run_id, runs.c.owner_id == owner_id)
        )
        async with self._db.read() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            raise NotFound("run", run_id)
        # What the registry hands the run (WorkflowRegistry.resolve): a version registered
        # before declarations were stored declares nothing, so its runs may read nothing.
        stored = (row.settings or {}).get("declared_env", [])
        return row.service_id, frozenset(str(entry["name"]) for entry in stored)

    # ---- writing --------------------------------------------------------------------------

    async def put(
        self, owner_id: str, name: str, value: str, *, workflow_id: str | None, actor: str
    ) -> SecretInfo:
        check_name(name)
        plaintext = check_value(value).encode()
        scope = workflow_id or OWNER_WIDE
        now = self._clock.now()
        async with self._db.write() as conn:
            if scope:
                await _require_workflow(conn, scope)
            data_key = await self._data_key_for_writing(conn, owner_id)
            ciphertext = seal(data_key, plaintext, value_context(owner_id, scope, name))
            dialect: Any = sqlite if conn.dialect.name == "sqlite" else postgresql
            statement = dialect.insert(secrets).values(
                owner_id=owner_id,
                workflow_id=scope,
                name=name,
                ciphertext=ciphertext,
                created_at=now,
                updated_at=now,
                updated_by=actor,
            )
            await conn.execute(
                statement.on_conflict_do_update(
                    index_elements=["owner_id", "workflow_id", "name"],
                    set_={"ciphertext": ciphertext, "updated_at": now, "updated_by": actor},
                )
            )
            created_at = (
                await conn.execute(
                    select(secrets.c.created_at).where(
                        secrets.c.owner_id == owner_id,
                        secrets.c.workflow_id == scope,
                        secrets.c.name == name,
                    )
                )
            ).scalar_one()
            await self._record(conn, "set", actor, owner_id, name, scope)
        return SecretInfo(
            owner_id=owner_id,
            name=name,
            workflow_id=workflow_id or None,
            created_at=created_at,
            updated_at=now,
            updated_by=actor,
        )

    async def remove(
        self, owner_id: str, name: str, *, workflow_id: str | None, actor: str
    ) -> None:
        check_name(name)
        scope = workflow_id or OWNER_WIDE
        async with self._db.write() as conn:
            result = await conn.execute(
                delete(secrets).where(
                    secrets.c.owner_id == owner_id,
                    secrets.c.workflow_id == scope,
                    secrets.c.name == name,
                )
            )
            if result.rowcount == 0:
                where = f"for workflow {scope}" if scope else "owner-wide"
                raise NotFound("secret", f"{name} ({where})")
            await self._record(conn, "delete", actor, owner_id, name, scope)

    async def rotate(self, *, actor: str) -> Rotation:
        """Re-seal every data key under the current master key, and make it the one new data
        keys use, in one transaction: until it commits, every node reads as before (the rows
        still name the old key); after, the rows name the new one. Keys are loaded afresh, so
        a new key file written just before is the current key."""
        self._keys = ring = self._load_keys()
        target = ring.current
        now = self._clock.now()
        async with self._db.write() as conn:
            # The state row first: on PostgreSQL it is the lock that a node making a new data
            # key also takes, so none is made under the old key while this runs.
            moved = await conn.execute(
                update(secret_master)
                .where(secret_master.c.id == STATE_ROW)
                .values(master_key_id=target.key_id, changed_at=now)
            )
            if moved.rowcount == 0:
                await conn.execute(
                    secret_master.insert().values(
                        id=STATE_ROW, master_key_id=target.key_id, changed_at=now
                    )
                )
            rows = (await conn.execute(select(secret_keys))).all()
            rewrapped = 0
            old_ids: set[str] = set()
            for row in rows:
                if row.master_key_id == target.key_id:
                    continue
                raw = self._unwrap(row.owner_id, row.master_key_id, row.wrapped_key)
                await conn.execute(
                    update(secret_keys)
                    .where(secret_keys.c.owner_id == row.owner_id)
                    .values(
                        master_key_id=target.key_id,
                        wrapped_key=seal(target.aead, raw, data_key_context(row.owner_id)),
                        rotated_at=now,
                    )
                )
                rewrapped += 1
                old_ids.add(row.master_key_id)
            detail = f"{rewrapped} of {len(rows)} data keys now under master key {target.key_id}"
            if old_ids:
                detail += f" (from {', '.join(sorted(old_ids))})"
            await self._record(conn, "rotate-key", actor, None, None, None, detail=detail)
        return Rotation(master_key_id=target.key_id, rewrapped=rewrapped, data_keys=len(rows))

    async def check_keys(self) -> str | None:
        """Why this node could not open the stored secrets, or ``None`` when it can: said once
        at start, so that a node with another master key is noticed before a run needs it."""
        async with self._db.read() as conn:
            active = (
                await conn.execute(
                    select(secret_master.c.master_key_id).where(secret_master.c.id == STATE_ROW)
                )
            ).scalar()
            used = set(
                (await conn.execute(select(secret_keys.c.master_key_id).distinct())).scalars()
            )
        needed = used | ({active} if active else set())
        missing = sorted(key for key in needed if self._find_master(key) is None)
        if not missing:
            return None
        return (
            f"stored secrets are encrypted under master key {', '.join(missing)}, which this "
            f"node does not have (its key is {self.master_key_id}): {UNREADABLE_HINT}"
        )

    # ---- keys -----------------------------------------------------------------------------

    async def _data_key_for_writing(self, conn: AsyncConnection, owner_id: str) -> AESGCM:
        """The owner's data key, made (under the database's current master key) if missing."""
        query = select(secret_keys.c.master_key_id, secret_keys.c.wrapped_key).where(
            secret_keys.c.owner_id == owner_id
        )
        row = (await conn.execute(query)).first()
        if row is None:
            master = await self._active_master(conn)
            dialect: Any = sqlite if conn.dialect.name == "sqlite" else postgresql
            # Two first secrets of one owner at once (PostgreSQL): the second waits for the
            # first's key, keeps it, and seals under it.
            await conn.execute(
                dialect.insert(secret_keys)
                .values(
                    owner_id=owner_id,
                    master_key_id=master.key_id,
                    wrapped_key=seal(master.aead, new_data_key(), data_key_context(owner_id)),
                    created_at=self._clock.now(),
                )
                .on_conflict_do_nothing(index_elements=["owner_id"])
            )
            row = (await conn.execute(query)).one()
        return self._open_data_key(owner_id, row.master_key_id, row.wrapped_key)

    async def _active_master(self, conn: AsyncConnection) -> MasterKey:
        """The master key new data keys are sealed under: the one the database names (so a node
        that already has the next key keeps using the old one until the rotation commits)."""
        state = select(secret_master.c.master_key_id).where(secret_master.c.id == STATE_ROW)
        active = (await conn.execute(state.with_for_update())).scalar()
        if active is None:
            dialect: Any = sqlite if conn.dialect.name == "sqlite" else postgresql
            await conn.execute(
                dialect.insert(secret_master)
                .values(
                    id=STATE_ROW,
                    master_key_id=self._keys.current.key_id,
                    changed_at=self._clock.now(),
                )
                .on_conflict_do_nothing(index_elements=["id"])
            )
            active = (await conn.execute(state)).scalar_one()
        return self._master(active)

    def _find_master(self, key_id: str) -> MasterKey | None:
        key = self._keys.get(key_id)
        now = self._clock.now()
        if key is None and now >= self._missing.get(key_id, now):
            # Another process may have rotated: its new key file is in place before any row
            # names the new key. Ask again, but for a key that is really gone (lost, or never
            # given to this node) not on every lookup: a file read each time, on the loop.
            self._keys = self._load_keys()
            key = self._keys.get(key_id)
            if key is None:
                self._missing[key_id] = now + timedelta(seconds=MISSING_KEY_RECHECK_SECONDS)
        return key

    def _master(self, key_id: str) -> MasterKey:
        key = self._find_master(key_id)
        if key is None:
            raise SecretsUnreadable(
                f"secrets cannot be decrypted: they are encrypted under master key {key_id}, "
                f"which this server does not have (its keys: {', '.join(self._keys.key_ids)}); "
                f"{UNREADABLE_HINT}"
            )
        return key

    def _unwrap(self, owner_id: str, key_id: str, wrapped: bytes) -> bytes:
        master = self._master(key_id)
        try:
            return unseal(master.aead, wrapped, data_key_context(owner_id))
        except InvalidTag:
            raise SecretsUnreadable(
                f"secrets cannot be decrypted: the data key of owner {owner_id} does not open "
                f"with master key {key_id} (the key or the stored row is not the one it was "
                "sealed with)"
            ) from None

    def _open_data_key(self, owner_id: str, key_id: str, wrapped: bytes) -> AESGCM:
        return AESGCM(self._unwrap(owner_id, key_id, wrapped))

    @staticmethod
    def _open_value(data_key: AESGCM, owner_id: str, row: Any) -> str:
        try:
            plaintext = unseal(
                data_key, row.ciphertext, value_context(owner_id, row.workflow_id, row.name)
            )
        except InvalidTag:
            raise SecretsUnreadable(
                f"secrets cannot be decrypted: the stored value of {row.name} of owner "
                f"{owner_id} does not open with its data key (it was altered or moved from "
                "another row)"
            ) from None
        return plaintext.decode()

    async def _record(
        self,
        conn: AsyncConnection,
        action: str,
        actor: str,
        owner_id: str | None,
        name: str | None,
        workflow_id: str | None,
        *,
        detail: str = "",
    ) -> None:
        await conn.execute(
            secret_events.insert().values(
                at=self._clock.now(),
                action=action,
                actor=actor[:64],
                owner_id=owner_id,
                name=name,
                workflow_id=workflow_id or None,
                detail=detail,
            )
        )


async def _require_workflow(conn: AsyncConnection, workflow_id: str) -> None:
    found = (
        await conn.execute(
            select(workflows.c.id).where(
                workflows.c.id == workflow_id, workflows.c.removed_at.is_(None)
            )
        )
    ).first()
    if found is None:
        raise NotFound("workflow", workflow_id)
