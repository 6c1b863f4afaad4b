"""``/api/v1/runs`` through a real server on 127.0.0.1, on SQLite and PostgreSQL: the list with
every filter and its cursor, one run's timeline and delivery, owner isolation, replay, bulk."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from core.models import ReplyTarget, RunRequest, Source
from tests.conftest import Live
from triggers.auth import KeyRole


async def _finished(http: httpx.AsyncClient, headers: dict[str, str], run_id: str) -> Any:
    async with asyncio.timeout(20):
        while True:
            shown = (await http.get(f"/api/v1/runs/{run_id}", headers=headers)).json()
            if shown["run"]["completed_at"] is not None:
                return shown
            await asyncio.sleep(0.05)  # polling a condition, bounded by the timeout above


async def _ids(http: httpx.AsyncClient, headers: dict[str, str], **params: Any) -> list[str]:
    """Every id the list gives for ``params``, page after page (``limit`` 2: the cursor works)."""
    found: list[str] = []
    cursor: str | None = None
    while True:
        query = {"limit": "2", **params, **({"cursor": cursor} if cursor else {})}
        page = await http.get("/api/v1/runs", params=query, headers=headers)
        assert page.status_code == 200, page.text
        body = page.json()
        assert all("inputs" not in item and "output" not in item for item in body["runs"])
        found += [item["id"] for item in body["runs"]]
        cursor = body["next_cursor"]
        if cursor is None:
            return found


async def test_the_runs_list_filters_pages_and_keeps_owners_apart(live: Live) -> None:
    services = live.services
    admin_key, _ = await services.keys.create(role=KeyRole.ADMIN, name="admin")
    bob_key = await live.key_for("bob")
    admin = {"Authorization": f"Bearer {admin_key}"}
    member = {"Authorization": f"Bearer {live.key}"}
    bob = {"Authorization": f"Bearer {bob_key}"}
    async with httpx.AsyncClient(base_url=live.url, timeout=20) as http:
        mine = [
            (await http.post("/run/echo/", json={"word": word}, headers=member)).headers[
                "X-Request-Id"
            ]
            for word in ("apple", "banana", "cherry")
        ]
        theirs = (await http.post("/run/echo/", json={"word": "durian"}, headers=bob)).headers[
            "X-Request-Id"
        ]
        slack = await services.gateway.submit(
            RunRequest(
                owner_id="default",
                service_id="missing-workflow",
                body='{"text": "from slack"}',
                source=Source.SLACK,
                reply_target=ReplyTarget(channel="none"),
            )
        )
        failed = await _finished(http, admin, slack.id)
        everything = await _ids(http, admin)
        assert set(everything) == {*mine, theirs, slack.id}
        assert everything[0] == slack.id  # newest first
        assert await _ids(http, admin, sort="created") == everything[::-1]
        assert set(await _ids(http, member)) == {*mine, slack.id}
        assert await _ids(http, bob) == [theirs]
        assert await _ids(http, admin, owner="bob") == [theirs]
        refused = await http.get("/api/v1/runs", params={"owner": "bob"}, headers=member)
        assert refused.status_code == 403
        assert await _ids(http, admin, status="failed") == [slack.id]
        both = await http.get(
            "/api/v1/runs?status=failed&status=completed&limit=500", headers=admin
        )
        assert len(both.json()["runs"]) == 5
        assert await _ids(http, admin, source="slack") == [slack.id]
        assert set(await _ids(http, admin, service_id="echo")) == {*mine, theirs}
        assert await _ids(http, admin, q="banana") == [mine[1]]
        assert await _ids(http, admin, q="durian") == [theirs]  # found in the output too
        assert await _ids(http, bob, q="banana") == []
        durations = await _ids(http, admin, sort="-duration")
        assert set(durations) == {*mine, theirs, slack.id}
        cut = failed["run"]["created_at"]
        assert await _ids(http, admin, since=cut) == [slack.id]
        assert slack.id not in await _ids(http, admin, until=cut)
        later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        assert await _ids(http, admin, since=later) == []
        for bad in ({"status": "sleeping"}, {"limit": "0"}, {"cursor": "nonsense"}, {"x": "1"}):
            answer = await http.get("/api/v1/runs", params=bad, headers=admin)
            assert answer.status_code == 400, bad
            assert "detail" in answer.json()

        shown = (await http.get(f"/api/v1/runs/{mine[0]}", headers=member)).json()
        assert shown["inputs"] == {"word": "apple"} and shown["output"] == {"word": "apple"}
        kinds = [step["kind"] for step in shown["timeline"]]
        assert kinds == ["queued", "attempt", "completed"]
        assert shown["timeline"][1]["attempt"] == 1
        assert shown["timeline"][2]["status"] == "completed"
        assert shown["delivery"] is None
        assert failed["run"]["status"] == "failed" and failed["run"]["source"] == "slack"
        other = await http.get(f"/api/v1/runs/{theirs}", headers=member)
        assert other.status_code == 404
        assert (await http.get(f"/api/v1/runs/{theirs}", headers=admin)).status_code == 200
