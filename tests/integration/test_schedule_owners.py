"""Schedule ids are unique per owner: a tenant's ``evening-report`` is not the operator's, the
config's ``[[schedules]]`` belong to ``scheduler.owner``, and a clash stops the start."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from sqlalchemy import select

from core.db import Database
from core.errors import Conflict
from dispatch.tables import runs
from scheduler.service import ConfigClash
from scheduler.tables import schedules
from switchboard.app import create_app
from switchboard.migrate import downgrade, upgrade
from tests.conftest import Live, LiveFactory, free_port, make_settings

REPORT = {
    "schedule_id": "evening-report",
    "service_id": "echo",
    "cron_expression": "0 18 * * *",
    "paused": True,
}
ENTRY: Any = {"id": "evening-report", "service_id": "echo", "cron": "0 18 * * *"}


async def post_schedule(live: Live, key: str, body: dict[str, Any]) -> httpx.Response:
    async with httpx.AsyncClient(base_url=live.url, headers={"Authorization": key}) as http:
        return await http.post("/schedules", json=body)


async def test_two_owners_each_have_a_schedule_of_one_id_with_its_own_runs(live: Live) -> None:
    alice, bob = await live.key_for("alice"), await live.key_for("bob")
    for key, who in ((alice, "alice"), (bob, "bob")):
        created = await post_schedule(live, key, {**REPORT, "input_data": {"who": who}})
        assert created.status_code == 201, created.text
    again = await post_schedule(live, bob, REPORT)
    assert again.status_code == 409  # unique per owner still
    ran: dict[str, str] = {}
    async with httpx.AsyncClient(base_url=live.url) as http:
        for key, who in ((alice, "alice"), (bob, "bob")):
            now = await http.post(
                "/schedules/evening-report/run-now", headers={"Authorization": key}
            )
            assert now.status_code == 202, now.text
            ran[who] = now.json()["request_id"]
        for key, who in ((alice, "alice"), (bob, "bob")):
            got = await http.get("/schedules/evening-report", headers={"Authorization": key})
            body = got.json()
            assert (body["owner_id"], body["inputs"]) == (who, {"who": who})
            assert [run["request_id"] for run in body["recent_runs"]] == [ran[who]]
    for who in ("alice", "bob"):
        record = await live.services.queue.get(ran[who])
        assert record is not None and record.owner_id == who
    with pytest.raises(Conflict, match="alice, bob"):
        await live.services.schedules.get(None, "evening-report")  # the CLI must name one


async def test_a_tenant_cannot_take_over_the_config_entry(live_factory: LiveFactory) -> None:
    first = await live_factory.start()
    bob = await first.key_for("bob")
    taken = await post_schedule(first, bob, {**REPORT, "input_data": {"bob": True}})
    assert taken.status_code == 201
    await live_factory.close()
    entries: Any = [{**ENTRY, "inputs": {"operator": True}}]  # a list, not a section
    live = await live_factory.start(schedules=entries)
    operators = await live.services.schedules.get("default", "evening-report")
    bobs = await live.services.schedules.get("bob", "evening-report")
    assert (operators.inputs, operators.from_config) == ({"operator": True}, True)
    assert (bobs.inputs, bobs.from_config) == ({"bob": True}, False)
    async with httpx.AsyncClient(base_url=live.url, headers={"Authorization": bob}) as http:
        changed = await http.patch("/schedules/evening-report", json={"inputs": {"x": 1}})
    assert changed.status_code == 200
    assert (await live.services.schedules.get("default", "evening-report")).inputs == {
        "operator": True
    }


async def test_a_config_entry_clashing_with_the_owner_s_own_schedule_stops_the_start(
    live_factory: LiveFactory, tmp_path: Path, database_url: str, workflow_cache: Path
) -> None:
    first = await live_factory.start()
    made = await post_schedule(first, first.key, REPORT)  # the operator's own key: "default"
    assert made.status_code == 201
    await live_factory.close()
    with pytest.raises(ConfigClash, match=r"evening-report.*made through the API"):
        await start_as_serve_does(tmp_path, database_url, workflow_cache, [ENTRY])
    with pytest.raises(ConfigClash, match="used by two entries"):
        twice = {**ENTRY, "id": "twice"}
        await start_as_serve_does(tmp_path, database_url, workflow_cache, [twice, twice])


async def start_as_serve_does(tmp_path: Path, database_url: str, cache: Path, entries: Any) -> None:
    """Start the service with ``entries`` as its [[schedules]], as ``switchboard serve`` does
    (a failed start closes what had started); stop it again if it started."""
    settings = make_settings(tmp_path / "data", database_url, cache, free_port(), schedules=entries)
    runner = web.AppRunner(create_app(settings), handle_signals=False)
    try:
        await runner.setup()
    finally:
        await runner.cleanup()


async def test_migration_0009_names_the_owner_in_scheduled_runs_keys_and_back(
    empty_database_url: str,
) -> None:
    database = Database(empty_database_url)
    await upgrade(database, "0008")
    async with database.write() as conn:
        await conn.exec_driver_sql(
            "INSERT INTO owners (id, name, created_at) VALUES ('ann', 'ann', CURRENT_TIMESTAMP)"
        )
        await conn.exec_driver_sql(
            "INSERT INTO runs (id, owner_id, service_id, path, method, status, source, "
            "idempotency_key, serial_key, attempts, created_at) VALUES ('req_old', 'ann', "
            "'echo', '', 'POST', 'completed', 'schedule', 'schedule:daily:2030-01-01T12:00:00Z', "
            "'schedule:daily', 1, CURRENT_TIMESTAMP)"
        )
    await upgrade(database)

    async def keys() -> tuple[Any, ...]:
        async with database.read() as conn:
            row = (
                await conn.execute(
                    select(runs.c.idempotency_key, runs.c.serial_key).where(runs.c.id == "req_old")
                )
            ).one()
        return tuple(row)

    assert await keys() == ("schedule:ann/daily:2030-01-01T12:00:00Z", "schedule:ann/daily")
    async with database.read() as conn:
        assert "from_config" in {column.name for column in schedules.columns}
        assert (await conn.execute(select(schedules.c.id))).all() == []
    await downgrade(database, "0008")
    assert await keys() == ("schedule:daily:2030-01-01T12:00:00Z", "schedule:daily")
    await upgrade(database)
    await database.dispose()
