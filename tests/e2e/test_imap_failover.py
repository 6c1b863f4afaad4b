"""Two ``switchboard serve`` processes reading one IMAP mailbox (issue 17): one connection in
the cluster; ``kill -9`` its holder and the other node connects, catches up, and every mail
makes one run."""

from __future__ import annotations

import json
import signal
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import create_async_engine

from dispatch.tables import runs
from tests.dovecot import Dovecot
from tests.e2e.harness import ServerProcess, Service, bearer, wait_until
from tests.integration.email_helpers import mail

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


async def mailbox_details(server: ServerProcess, key: str, trigger: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=server.url, headers=bearer(key)) as http:
        response = await http.get("/api/v1/triggers")
        assert response.status_code == 200, response.text
    found = {t["name"]: t for t in response.json()["triggers"]}
    details: dict[str, Any] = found[trigger]["details"]
    return details


async def test_one_connection_per_mailbox_and_the_other_node_takes_over_a_killed_holder(
    service: Service, database_url: str, dovecot: Dovecot
) -> None:
    user = dovecot.add_user()
    trigger = f"email:imap:{user.name}"
    settings = {
        "SWITCHBOARD_EMAIL__WORKFLOW": "echo",
        "SWITCHBOARD_EMAIL__MAILBOXES": json.dumps([user.mailbox()]),
    }
    first = await service.start_ready(**settings)
    second = await service.start_ready(**settings)
    key = (service.data_dir / "admin.key").read_text().strip()
    by_pid = {first.pid: first, second.pid: second}

    async def holder() -> ServerProcess | None:
        details = await mailbox_details(first, key, trigger)
        if not details["connected"]:
            return None
        return by_pid.get(int(str(details["holder"]).split(":")[1]))

    holding = await wait_until(holder, 30, "a node holding the mailbox")
    other = second if holding is first else first
    before, after = mail(to=f"{user.name}@example.test"), mail(to=f"{user.name}@example.test")
    engine = create_async_engine(database_url)

    async def run_keys() -> list[str]:
        async with engine.connect() as conn:
            query = select(runs.c.idempotency_key).where(runs.c.source == "email")
            return [str(k) for k in (await conn.execute(query)).scalars()]

    try:
        async with dovecot.client(user) as imap:
            await imap.append(before.as_bytes())
            await wait_until(run_keys, 30, "the first mail's run")
            # Our own connection aside, the cluster holds one.
            assert dovecot.connections(user) == 2

            holding.signal(signal.SIGKILL)
            await holding.wait_exit(10)
            await imap.append(after.as_bytes())

            async def taken_over() -> bool:
                details = await mailbox_details(other, key, trigger)
                return bool(details["connected"]) and str(other.pid) in str(details["holder"])

            await wait_until(taken_over, 20, "the other node holding the mailbox")

            async def both() -> list[str] | None:
                keys = await run_keys()
                return keys if len(keys) >= 2 else None

            keys = await wait_until(both, 30, "the second mail's run")
            assert sorted(keys) == sorted(f"email:{m['Message-ID']}" for m in (before, after))
            await wait_until(
                lambda: dovecot.connections(user) == 2, 10, "one cluster connection again"
            )
    finally:
        await engine.dispose()
