"""Changing a schedule over REST (``PATCH``) and through ``schedule_runs`` ``update``, with the
leader following the change; another owner's schedules are not found (404), whatever the verb."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from codewords_client import AsyncCodewordsClient

from core.clock import parse_iso
from core.models import RunRecord
from tests.conftest import Live
from tests.integration.schedule_helpers import EVERY_SECOND, eventually, schedule_runs

YEARLY = "0 0 1 1 *"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_patch_and_update_action_change_what_the_leader_fires(live: Live) -> None:
    async with httpx.AsyncClient(base_url=live.url, headers=bearer(live.key)) as http:
        created = await http.post(
            "/schedules",
            json={"id": "changing", "service_id": "echo", "cron": YEARLY, "inputs": {"v": 1}},
        )
        assert created.status_code == 201, created.text
        assert parse_iso(created.json()["next_fire_at"]).month == 1
        patched = await http.patch("/schedules/changing", json={"cron": EVERY_SECOND})
        assert patched.status_code == 200, patched.text
        assert patched.json()["cron"] == EVERY_SECOND
        assert patched.json()["inputs"] == {"v": 1}  # fields not named stay as they were
        soon = datetime.now(UTC) + timedelta(seconds=5)
        assert parse_iso(patched.json()["next_fire_at"]) <= soon
        refused = await http.patch("/schedules/changing", json={"cron": "0 25 * * *"})
        assert refused.status_code == 400 and "bad hour field" in refused.json()["detail"]

        async def fired(minimum: int, body: dict[str, int]) -> list[RunRecord] | None:
            made = [
                r
                for r in await schedule_runs(live, "changing")
                if json.loads(r.request_body or "null") == body
            ]
            return made if len(made) >= minimum else None

        await eventually(lambda: fired(2, {"v": 1}), "ticks of the patched cron")

    async with AsyncCodewordsClient(base_url=live.url, api_key=live.key) as codewords:
        updated = await codewords.run(
            "schedule_runs",
            {"action": "update", "schedule_id": "changing", "input_data": {"v": 2}},
        )
        assert updated.json()["inputs"] == {"v": 2}
        assert updated.json()["cron"] == EVERY_SECOND
    await eventually(lambda: fired(2, {"v": 2}), "ticks with the updated inputs")
    await live.services.schedules.pause(None, "changing")


async def test_another_owners_schedule_is_not_found(live: Live) -> None:
    async with httpx.AsyncClient(base_url=live.url, headers=bearer(live.key)) as http:
        created = await http.post(
            "/schedules", json={"id": "mine", "service_id": "echo", "cron": YEARLY}
        )
        assert created.status_code == 201, created.text
    other = await live.key_for("intruder")
    async with httpx.AsyncClient(base_url=live.url, headers=bearer(other)) as http:
        attempts = [
            await http.get("/schedules/mine"),
            await http.patch("/schedules/mine", json={"cron": EVERY_SECOND}),
            await http.post("/schedules/mine/pause"),
            await http.post("/schedules/mine/resume"),
            await http.post("/schedules/mine/run-now"),
            await http.get("/schedules/mine/preview"),
            await http.delete("/schedules/mine"),
        ]
        assert [r.status_code for r in attempts] == [404] * len(attempts)
        assert all("mine" in r.json()["detail"] for r in attempts)
        assert (await http.get("/schedules")).json() == {"schedules": []}
    async with AsyncCodewordsClient(base_url=live.url, api_key=other) as codewords:
        for action in ("get", "update", "pause", "run_now", "delete"):
            with pytest.raises(httpx.HTTPStatusError) as refused:
                await codewords.run("schedule_runs", {"action": action, "schedule_id": "mine"})
            assert refused.value.response.status_code == 404, action
    untouched = await live.services.schedules.get(None, "mine")
    assert (untouched.owner_id, untouched.cron, untouched.paused) == ("default", YEARLY, False)
    assert await schedule_runs(live, "mine") == []
