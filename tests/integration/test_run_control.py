"""Cancel, replay and bulk through ``/api/v1``, and the workflows and keys routes, on a real
server on 127.0.0.1, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import WORKFLOWS, LiveFactory
from tests.integration.sandbox_helpers import host_sandbox_or_problem
from triggers.auth import KeyRole

SLOW = (WORKFLOWS / "slow.py").read_text(encoding="utf-8")


async def _until(http: httpx.AsyncClient, headers: dict[str, str], run_id: str, done: Any) -> Any:
    async with asyncio.timeout(30):
        while True:
            shown = (await http.get(f"/api/v1/runs/{run_id}", headers=headers)).json()
            if done(shown):
                return shown
            await asyncio.sleep(0.05)  # polling a condition, bounded by the timeout above


def _finished(shown: Any) -> bool:
    return shown["run"]["completed_at"] is not None


async def test_cancel_replay_bulk_workflows_and_keys(live_factory: LiveFactory) -> None:
    web_only = await live_factory.start(roles={"web"})
    admin_key, _ = await web_only.services.keys.create(role=KeyRole.ADMIN, name="admin")
    admin = {"Authorization": f"Bearer {admin_key}"}
    member = {"Authorization": f"Bearer {web_only.key}"}
    bob = {"Authorization": f"Bearer {await web_only.key_for('bob')}"}
    async with httpx.AsyncClient(base_url=web_only.url, timeout=60) as http:
        # Workflows: deploy is admin-only, a broken file is a 400 naming the problem.
        refused = await http.put("/api/v1/workflows/slow", content=SLOW, headers=member)
        assert refused.status_code == 403
        broken = await http.put("/api/v1/workflows/slow", content="print(1)", headers=admin)
        assert broken.status_code == 400 and "PEP 723" in broken.json()["detail"]
        first = await http.put("/api/v1/workflows/slow", content=SLOW, headers=admin)
        assert first.status_code == 201, first.text
        assert first.json()["version"] == 1 and "fastapi>=0.115" in first.json()["dependencies"]

        queued = [
            (await http.post("/run_async/slow", json={"seconds": 0}, headers=who)).json()[
                "request_id"
            ]
            for who in (member, member, bob)
        ]
        assert (
            await http.post(f"/api/v1/runs/{queued[2]}/cancel", headers=member)
        ).status_code == 404
        cancelled = await http.post(f"/api/v1/runs/{queued[0]}/cancel", headers=member)
        assert cancelled.json()["status"] == "cancelled"
        again = await http.post(f"/api/v1/runs/{queued[0]}/cancel", headers=member)
        assert again.status_code == 409
        counted = await http.post(
            "/api/v1/runs/bulk",
            json={"action": "cancel", "status": ["queued"], "dry_run": True},
            headers=admin,
        )
        assert counted.json()["matched"] == 2 and counted.json()["acted"] == []
        listed = await http.get("/api/v1/runs", params={"status": "queued"}, headers=admin)
        assert len(listed.json()["runs"]) == counted.json()["matched"]
        mine = await http.post(
            "/api/v1/runs/bulk", json={"action": "cancel", "status": ["queued"]}, headers=bob
        )
        assert mine.json()["acted"] == [queued[2]]  # a member's bulk touches its own runs only

        # Keys: the secret once, members only their own.
        made = await http.post("/api/v1/keys", json={"owner": "carol"}, headers=admin)
        assert made.status_code == 201 and made.json()["secret"].startswith("cwk-")
        listed_keys = (await http.get("/api/v1/keys", headers=admin)).json()["keys"]
        assert "secret" not in listed_keys[0] and {k["owner"] for k in listed_keys} >= {"carol"}
        assert (
            await http.post("/api/v1/keys", json={"owner": "carol"}, headers=member)
        ).status_code == 403
        assert {
            k["owner"] for k in (await http.get("/api/v1/keys", headers=member)).json()["keys"]
        } == {"default"}
        carol = made.json()["key"]["id"]
        assert (await http.delete(f"/api/v1/keys/{carol}", headers=member)).status_code == 404
        assert (await http.delete(f"/api/v1/keys/{carol}", headers=admin)).json() == {
            "revoked": carol
        }

    # A worker node on the same database: the cancelled run never starts, the other runs.
    worker = await live_factory.start()
    async with httpx.AsyncClient(base_url=worker.url, timeout=60) as http:
        ran = await _until(http, admin, queued[1], _finished)
        assert ran["run"]["status"] == "completed" and ran["run"]["workflow_version"] == 1
        second = await http.put("/api/v1/workflows/slow", content=SLOW + "\n# v2\n", headers=admin)
        assert second.json()["version"] == 2
        shown = (await http.get("/api/v1/workflows/slow", headers=member)).json()
        assert [v["version"] for v in shown["versions"]] == [2, 1]
        assert shown["versions"][0]["lock_hash"] == shown["versions"][1]["lock_hash"]
        assert shown["versions"][0]["declared_env"][0]["name"] == "PORT"

        never = (await http.get(f"/api/v1/runs/{queued[0]}", headers=admin)).json()
        assert never["run"]["status"] == "cancelled" and never["run"]["attempts"] == 0
        assert [step["kind"] for step in never["timeline"]] == ["queued", "completed"]

        edited = await http.post(
            f"/api/v1/runs/{queued[1]}/replay", json={"inputs": {"seconds": 0.01}}, headers=member
        )
        assert edited.status_code == 201, edited.text
        assert edited.json()["source"] == "replay" and edited.json()["replay_of"] == queued[1]
        same = await _until(http, member, edited.json()["id"], _finished)
        assert same["inputs"] == {"seconds": 0.01} and same["output"] == {"slept": 0.01}
        assert same["run"]["workflow_version"] == 1  # "same": the version the original ran
        latest = await http.post(
            f"/api/v1/runs/{queued[1]}/replay", json={"version": "latest"}, headers=member
        )
        newest = await _until(http, member, latest.json()["id"], _finished)
        assert newest["run"]["workflow_version"] == 2 and newest["inputs"] == {"seconds": 0}
        replays = await http.get("/api/v1/runs", params={"source": "replay"}, headers=member)
        assert {r["id"] for r in replays.json()["runs"]} == {
            edited.json()["id"],
            latest.json()["id"],
        }
        foreign = await http.post(f"/api/v1/runs/{queued[1]}/replay", json={}, headers=bob)
        assert foreign.status_code == 404
        assert (await http.delete("/api/v1/workflows/slow", headers=member)).status_code == 403
        assert (await http.delete("/api/v1/workflows/slow", headers=admin)).status_code == 200
        assert (await http.get("/api/v1/workflows/slow", headers=admin)).status_code == 404


def _run_cgroups(run_id: str) -> list[Path]:
    root = Path("/sys/fs/cgroup")
    return [found for depth in range(1, 5) for found in root.glob("*/" * depth + f"run-{run_id}")]


async def test_cancelling_a_running_sandboxed_run_stops_it_and_leaves_nothing(
    live_factory: LiveFactory,
) -> None:
    host = host_sandbox_or_problem()
    if isinstance(host, str):
        pytest.skip(host)
    live = await live_factory.start(runtime={"sandbox": "bwrap"})
    await live.register("slow")
    admin_key, _ = await live.services.keys.create(role=KeyRole.ADMIN, name="admin")
    admin = {"Authorization": f"Bearer {admin_key}"}
    async with httpx.AsyncClient(base_url=live.url, timeout=60) as http:
        run_id = (await http.post("/run_async/slow", json={"seconds": 120}, headers=admin)).json()[
            "request_id"
        ]
        run_dir = live.services.runs_dir / run_id
        async with asyncio.timeout(30):
            while True:
                if _run_cgroups(run_id) and run_dir.exists():
                    break
                await asyncio.sleep(0.05)  # polling a condition, bounded by the timeout
        cancelled = await http.post(f"/api/v1/runs/{run_id}/cancel", headers=admin)
        assert cancelled.json()["status"] == "cancelled", cancelled.text
        async with asyncio.timeout(15):
            while True:
                if not _run_cgroups(run_id) and not run_dir.exists():
                    break
                await asyncio.sleep(0.05)
        shown = (await http.get(f"/api/v1/runs/{run_id}", headers=admin)).json()
        result = (await http.get(f"/result/{run_id}", headers=admin)).json()
    assert shown["run"]["status"] == "cancelled" and shown["delivery"] is None
    assert [step["kind"] for step in shown["timeline"]] == ["queued", "attempt", "completed"]
    assert result["status"] == "cancelled"
