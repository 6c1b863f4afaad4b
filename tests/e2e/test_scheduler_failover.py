"""Two ``switchboard serve`` processes on one PostgreSQL: one leads the schedules, the other
stands by. ``kill -9`` the leader: the standby takes over within 5 s, and every tick of a
per-second schedule set makes exactly one run (none doubled, none lost). The schedules keep the
default misfire policy ``skip``: the ticks that fell into the hand-over are within the take-over
grace and fire anyway; one schedule has jitter, so a tick may die in its jitter sleep."""

from __future__ import annotations

import math
import signal
import time
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import create_async_engine

from core.clock import parse_iso
from dispatch.tables import runs
from tests.e2e.conftest import ServiceFactory
from tests.e2e.harness import ServerProcess, bearer, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.slow]

SCHEDULES = [f"every-second-{n}" for n in range(3)]
JITTER = {"every-second-2": 4.0}
"""Several ticks of this one are always in their jitter sleep, out of order: some die with the
leader, after a later one was recorded."""


async def role(server: ServerProcess) -> str | None:
    response = await server.health()
    if response is None or response.status_code != 200:
        return None
    value: str | None = response.json().get("scheduler")
    return value


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_leader_killed_standby_takes_over_without_doubling_or_losing_ticks(
    make_service: ServiceFactory, database_url: str, workflow_cache: Path
) -> None:
    url = database_url
    service = make_service(
        {
            "SWITCHBOARD_SERVER__DATABASE_URL": url,
            "SWITCHBOARD_RUNTIME__ENV_DIR": str(workflow_cache / "envs"),
            "SWITCHBOARD_RUNTIME__UV_CACHE_DIR": str(workflow_cache / "uv"),
            "SWITCHBOARD_RUNTIME__POLL_INTERVAL": "0.2",
            "SWITCHBOARD_RUNTIME__REGISTER_EXAMPLES": "false",
        }
    )
    first = await service.start_ready()
    second = await service.start_ready()
    servers = {first.name: first, second.name: second}

    async def leader_and_standby() -> tuple[ServerProcess, ServerProcess] | None:
        roles = {name: await role(server) for name, server in servers.items()}
        leaders = [servers[n] for n, r in roles.items() if r == "leader"]
        standbys = [servers[n] for n, r in roles.items() if r == "standby"]
        return (leaders[0], standbys[0]) if len(leaders) == 1 and len(standbys) == 1 else None

    leader, standby = await wait_until(leader_and_standby, 30, "one leader and one standby")
    key = (service.data_dir / "admin.key").read_text().strip()
    async with httpx.AsyncClient(base_url=standby.url, headers=bearer(key)) as http:
        for schedule_id in SCHEDULES:
            created = await http.post(
                "/schedules",
                json={
                    "id": schedule_id,
                    "service_id": "echo",
                    "cron_expression": "* * * * * *",
                    "jitter": JITTER.get(schedule_id, 0),
                },
            )
            assert created.status_code == 201, created.text
            assert created.json()["misfire_policy"] == "skip"

    engine = create_async_engine(url)

    async def fire_times() -> dict[str, list[datetime]]:
        async with engine.connect() as conn:
            keys = (
                await conn.execute(
                    select(runs.c.idempotency_key).where(runs.c.source == "schedule")
                )
            ).scalars()
            found: dict[str, list[datetime]] = {schedule_id: [] for schedule_id in SCHEDULES}
            for key_text in keys:
                _, scheduled, tick = key_text.split(":", 2)  # schedule:<owner>/<id>:<time>
                schedule_id = scheduled.partition("/")[2]
                found[schedule_id].append(parse_iso(tick))
        return found

    async def ticking(minimum: int) -> bool:
        return all(len(times) >= minimum for times in (await fire_times()).values())

    try:
        await wait_until(lambda: ticking(3), 30, "three ticks of every schedule")
        missed_before = await missed_counts(standby.url, key)
        leader.signal(signal.SIGKILL)
        killed_at = time.monotonic()
        await leader.wait_exit(10)
        taken_over = await wait_until(lambda: _leads(standby), 10, "the standby to take over")
        assert taken_over
        takeover_seconds = time.monotonic() - killed_at
        assert takeover_seconds <= 5, f"took over after {takeover_seconds:.2f} s"
        seen_at_takeover = max(max(times) for times in (await fire_times()).values())

        async def past_takeover() -> bool:
            return all(
                times and max(times) >= seen_at_takeover + timedelta(seconds=6)
                for times in (await fire_times()).values()
            )

        await wait_until(past_takeover, 30, "ticks well after the take-over")
        final = await fire_times()
        # Nothing counted missed across the kill (the count may only grow before it, when a
        # loaded machine picked the new schedules up late).
        assert await missed_counts(standby.url, key) == missed_before
    finally:
        await engine.dispose()
    for schedule_id, times in final.items():
        counts = Counter(times)
        assert max(counts.values()) == 1, f"{schedule_id}: doubled ticks {counts.most_common(3)}"
        ordered = sorted(times)
        # The latest jittered ticks may still sleep: check up to one jitter before the last.
        settled = ordered[-1] - timedelta(seconds=math.ceil(JITTER.get(schedule_id, 0)))
        assert settled > seen_at_takeover, "too few ticks after the take-over to judge"
        expected = [
            ordered[0] + timedelta(seconds=n)
            for n in range(int((settled - ordered[0]).total_seconds()) + 1)
        ]
        lost = sorted(set(expected) - set(ordered))
        assert not lost, f"{schedule_id}: ticks lost across the kill: {lost}"


async def missed_counts(url: str, key: str) -> dict[str, int]:
    async with httpx.AsyncClient(base_url=url, headers=bearer(key)) as http:
        return {
            schedule_id: (await http.get(f"/schedules/{schedule_id}")).json()["missed_count"]
            for schedule_id in SCHEDULES
        }


async def _leads(server: ServerProcess) -> bool:
    return await role(server) == "leader"
