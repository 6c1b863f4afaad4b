"""API keys: who is calling, and what a one-time key may still do.

Key kinds (PROTOCOLS part A): ``cwk-…`` reusable; ``cwotk-…`` one-time: it starts exactly one run
(a provision plus the run that fills it count as one) and may then read only that run; and
``cwk-run.…`` minted per run so a workflow can call other services as its owner while its run
runs, with the grants its header asked for (README 'Run keys'). Keys are stored as sha256 hashes.
A reusable key has a role: ``member`` acts for its owner; ``admin`` may also drive what spans every
owner (the inbox and triggers, README 'Key roles'). One-time and run keys are never admin.
Verified reusable keys, and runs found running, are cached for ``cache_seconds`` so the hot path
does not ask the database on every request: a revocation made by another process (at once in this
one), or the end of a run, takes effect within that time.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import or_, select, update

from core.clock import Clock
from core.db import Database
from core.errors import BadRequest, Conflict, Forbidden, NotFound, Unauthorized
from core.models import OWNER_RIGHTS, CallerRights, Grant
from core.ports import RunStates
from core.security import (
    ONE_TIME_PREFIX,
    REUSABLE_PREFIX,
    RUN_KEY_PREFIX,
    Signer,
    display_prefix,
    generate_api_key,
    hash_api_key,
)
from core.tables import owners
from triggers.auth_tables import api_keys

OWNER_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
DEFAULT_OWNER = "default"


class KeyRole(StrEnum):
    """What a reusable key may do beyond acting for its owner."""

    ADMIN = "admin"
    """Also the operator's surfaces that span every owner (triggers, the inbox)."""
    MEMBER = "member"
    """Only its owner's own runs, workflows, schedules and secrets (the default)."""


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller of one request."""

    owner_id: str
    key_id: str | None = None
    one_time: bool = False
    bound_run_id: str | None = None
    acting_run_id: str | None = None
    rights: CallerRights = OWNER_RIGHTS
    """A full owner key's, or the grants of a run key (``acting_run_id``)."""
    role: KeyRole = KeyRole.MEMBER
    """The key's role; always ``member`` for one-time and run keys."""

    @property
    def is_admin(self) -> bool:
        return self.role is KeyRole.ADMIN and not self.one_time and self.acting_run_id is None

    @property
    def caller_id(self) -> str:
        """Who started a run: the key's id, or the run whose workflow made the call."""
        return self.key_id or self.acting_run_id or self.owner_id

    def require(self, grant: Grant, what: str) -> None:
        """Refuse (403) what this caller's rights do not cover."""
        self.rights.require(grant, what)

    def require_admin(self, what: str) -> None:
        """Refuse (403) ``what`` to anything but an admin key; ``what`` names the action."""
        if self.is_admin:
            return
        kind = (
            "a run key"
            if self.acting_run_id is not None
            else ("a one-time key" if self.one_time else f"this key's role is {self.role}")
        )
        raise Forbidden(f"{what} needs an admin key ({kind})")


@dataclass(frozen=True, slots=True)
class KeyInfo:
    id: str
    owner_id: str
    name: str
    prefix: str
    one_time: bool
    role: KeyRole
    created_at: datetime
    revoked_at: datetime | None
    used_at: datetime | None


class KeyStore:
    """Owners and their API keys."""

    def __init__(self, database: Database, clock: Clock) -> None:
        self._db = database
        self._clock = clock

    async def ensure_owner(self, owner_id: str) -> str:
        if not OWNER_ID.match(owner_id):
            raise BadRequest(f"invalid owner {owner_id!r}: use a-z, 0-9, '_' and '-' (≤ 64)")
        async with self._db.write() as conn:
            found = (await conn.execute(select(owners.c.id).where(owners.c.id == owner_id))).first()
            if found is None:
                await conn.execute(
                    owners.insert().values(id=owner_id, name=owner_id, created_at=self._clock.now())
                )
        return owner_id

    async def create(
        self,
        *,
        owner_id: str = DEFAULT_OWNER,
        name: str = "",
        one_time: bool = False,
        role: KeyRole = KeyRole.MEMBER,
    ) -> tuple[str, KeyInfo]:
        """A new key for ``owner_id`` (created if needed); the key text is only in the result."""
        if one_time and role is KeyRole.ADMIN:
            raise BadRequest("a one-time key cannot be an admin key: it only starts one run")
        await self.ensure_owner(owner_id)
        key = generate_api_key(one_time=one_time)
        info = KeyInfo(
            id="key_" + secrets.token_hex(8),
            owner_id=owner_id,
            name=name or ("one-time key" if one_time else "key"),
            prefix=display_prefix(key),
            one_time=one_time,
            role=role,
            created_at=self._clock.now(),
            revoked_at=None,
            used_at=None,
        )
        async with self._db.write() as conn:
            await conn.execute(
                api_keys.insert().values(
                    id=info.id,
                    owner_id=owner_id,
                    name=info.name,
                    prefix=info.prefix,
                    key_hash=hash_api_key(key),
                    one_time=one_time,
                    role=role.value,
                    created_at=info.created_at,
                )
            )
        return key, info

    async def list(self, owner_id: str | None = None) -> list[KeyInfo]:
        query = select(api_keys).order_by(api_keys.c.created_at)
        if owner_id is not None:
            query = query.where(api_keys.c.owner_id == owner_id)
        async with self._db.read() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [
            KeyInfo(
                id=row["id"],
                owner_id=row["owner_id"],
                name=row["name"],
                prefix=row["prefix"],
                one_time=row["one_time"],
                role=KeyRole(row["role"]),
                created_at=row["created_at"],
                revoked_at=row["revoked_at"],
                used_at=row["used_at"],
            )
            for row in rows
        ]

    async def revoke(self, key_id_or_prefix: str) -> str:
        """Revoke by key id (``key_…``) or by the displayed prefix; the id of the key revoked.

        A displayed prefix is only 4 random characters, so two keys may share one: an ambiguous
        prefix revokes nothing and names the ids to choose from.
        """
        async with self._db.write() as conn:
            matches = (
                await conn.execute(
                    select(api_keys.c.id, api_keys.c.owner_id)
                    .where(
                        or_(
                            api_keys.c.id == key_id_or_prefix,
                            api_keys.c.prefix == key_id_or_prefix,
                        ),
                        api_keys.c.revoked_at.is_(None),
                    )
                    .order_by(api_keys.c.created_at)
                )
            ).all()
            exact = [row for row in matches if row.id == key_id_or_prefix]
            chosen = exact or matches
            if len(chosen) > 1:
                listed = ", ".join(f"{row.id} (owner {row.owner_id})" for row in chosen)
                raise Conflict(
                    f"{len(chosen)} active keys share the prefix {key_id_or_prefix!r}: {listed}; "
                    "revoke one by its id"
                )
            if not chosen:
                raise NotFound("active API key", key_id_or_prefix)
            key_id = str(chosen[0].id)
            await conn.execute(
                update(api_keys)
                .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=self._clock.now())
            )
        return key_id

    async def find(self, key: str) -> Principal | None:
        async with self._db.read() as conn:
            row = (
                (
                    await conn.execute(
                        select(api_keys).where(
                            api_keys.c.key_hash == hash_api_key(key),
                            api_keys.c.revoked_at.is_(None),
                        )
                    )
                )
                .mappings()
                .first()
            )
        if row is None:
            return None
        return Principal(
            owner_id=row["owner_id"],
            key_id=row["id"],
            one_time=row["one_time"],
            bound_run_id=row["bound_run_id"],
            role=KeyRole(row["role"]),
        )

    async def use_one_time_key(self, key_id: str, run_id: str) -> bool:
        """Spend a one-time key on ``run_id``; ``False`` if it was spent already."""
        async with self._db.write() as conn:
            result = await conn.execute(
                update(api_keys)
                .where(
                    api_keys.c.id == key_id,
                    api_keys.c.used_at.is_(None),
                    api_keys.c.revoked_at.is_(None),
                )
                .values(used_at=self._clock.now(), bound_run_id=run_id)
            )
        return result.rowcount == 1

    async def release_one_time_key(self, key_id: str, run_id: str) -> None:
        """Give back a key spent on ``run_id`` when that run could not be made after all."""
        async with self._db.write() as conn:
            await conn.execute(
                update(api_keys)
                .where(api_keys.c.id == key_id, api_keys.c.bound_run_id == run_id)
                .values(used_at=None, bound_run_id=None)
            )


class Authenticator:
    """Turns an ``Authorization`` header into a :class:`Principal`, or raises ``Unauthorized``."""

    def __init__(
        self,
        store: KeyStore,
        signer: Signer,
        clock: Clock,
        *,
        runs: RunStates,
        cache_seconds: float,
    ) -> None:
        self._store = store
        self._runs = runs
        self._signer = signer
        self._clock = clock
        self._cache_seconds = cache_seconds
        self._cache: dict[str, tuple[Principal, float]] = {}
        self._lookups: dict[str, asyncio.Future[Principal | None]] = {}
        self._running: dict[str, float] = {}
        """run id -> until when (monotonic) it is known to be running"""
        self._ended: set[str] = set()
        """runs known to have ended: their keys are dead for good"""

    async def authenticate(self, header: str | None) -> Principal:
        key = _key_from_header(header)
        if key.startswith(RUN_KEY_PREFIX):
            return await self._run_principal(key)
        if key.startswith(ONE_TIME_PREFIX):
            principal = await self._store.find(key)
        else:
            cached = self._cache.get(key)
            if cached is not None and cached[1] > time.monotonic():
                return cached[0]
            principal = await self._find_once(key)
            if principal is not None:
                if len(self._cache) > 10_000:
                    self._cache.clear()
                self._cache[key] = (principal, time.monotonic() + self._cache_seconds)
        if principal is None:
            self._cache.pop(key, None)
            raise Unauthorized("invalid or revoked API key")
        return principal

    async def _run_principal(self, key: str) -> Principal:
        """A run key acts while its run runs: checked against the run's state, a running run
        cached for ``cache_seconds`` (an ended one for good, it never runs again)."""
        found = self._signer.read_run_key(key, now=int(self._clock.now().timestamp()))
        if found is None:
            raise Unauthorized("invalid or expired run key")
        ended = found.run_id in self._ended
        if ended or not await self._still_running(found.run_id, found.owner_id):
            raise Unauthorized(f"this run key's run {found.run_id} has ended")
        try:
            grants = frozenset(Grant(name) for name in found.grants)
        except ValueError as exc:  # signed by us, so only a downgrade could get here
            raise Unauthorized("this run key names a grant this server does not know") from exc
        return Principal(
            owner_id=found.owner_id, acting_run_id=found.run_id, rights=CallerRights(grants)
        )

    async def _still_running(self, run_id: str, owner_id: str) -> bool:
        if self._running.get(run_id, 0.0) > time.monotonic():
            return True
        running = await self._runs.is_running(run_id, owner_id)
        if len(self._running) > 10_000:
            self._running.clear()
        if len(self._ended) > 10_000:
            self._ended.clear()
        if running:
            self._running[run_id] = time.monotonic() + self._cache_seconds
        else:
            self._running.pop(run_id, None)
            self._ended.add(run_id)
        return running

    async def _find_once(self, key: str) -> Principal | None:
        """One database lookup per key at a time: when a cached key expires under load, the
        requests that arrive meanwhile wait for the first one's answer instead of each asking."""
        pending = self._lookups.get(key)
        if pending is not None:
            try:
                return await asyncio.shield(pending)
            except asyncio.CancelledError:
                if not pending.cancelled():
                    raise  # this request itself was cancelled
                # the request doing the lookup went away: do it here
        future: asyncio.Future[Principal | None] = asyncio.get_running_loop().create_future()
        self._lookups[key] = future
        try:
            principal = await self._store.find(key)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # marked retrieved: each waiter re-raises it itself
            raise
        finally:
            if self._lookups.get(key) is future:
                del self._lookups[key]
        future.set_result(principal)
        return principal

    async def authorise_start(
        self, principal: Principal, run_id: str, *, provisioned: bool
    ) -> None:
        """May ``principal`` start run ``run_id``? A one-time key may, once: it is spent on a new
        run (or a husk it provisions), and fills only the husk it provisioned itself. Naming any
        other request never binds the key to it (else the key could read that request)."""
        if not principal.one_time:
            return
        if provisioned:
            if principal.bound_run_id == run_id:
                return
            raise Unauthorized("a one-time key may only fill the request it provisioned itself")
        if principal.key_id is None or not await self._store.use_one_time_key(
            principal.key_id, run_id
        ):
            raise Unauthorized("this one-time key has already been used")

    async def cancel_start(self, principal: Principal, run_id: str) -> None:
        """The run ``authorise_start`` allowed was not made: a one-time key is not spent on it."""
        if principal.one_time and principal.key_id is not None:
            await self._store.release_one_time_key(principal.key_id, run_id)

    @staticmethod
    def authorise_read(principal: Principal, run_id: str) -> None:
        """A one-time key may read only the run it started."""
        if principal.one_time and principal.bound_run_id != run_id:
            raise Unauthorized("a one-time key may only read the run it started")

    @staticmethod
    def refuse_one_time(principal: Principal, what: str) -> None:
        if principal.one_time:
            raise Unauthorized(f"a one-time key cannot be used for {what}")

    @staticmethod
    def refuse_run_key(principal: Principal, what: str) -> None:
        """A workflow's run key acts within its grants (README 'Run keys'); what an operator
        does (``what``: make or revoke keys, steer runs) would let it step outside them."""
        if principal.acting_run_id is not None:
            raise Forbidden(f"a run's key cannot be used for {what}; use an API key")


def _key_from_header(header: str | None) -> str:
    if not header or not header.strip():
        raise Unauthorized("missing API key: send 'Authorization: Bearer cwk-…'")
    value = header.strip()
    if value[:7].lower() == "bearer ":
        value = value[7:].strip()
    if not value.startswith((REUSABLE_PREFIX, ONE_TIME_PREFIX)):
        raise Unauthorized("invalid or revoked API key")
    return value
