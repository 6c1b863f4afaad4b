"""``/api/v1/triggers`` and ``/api/v1/inbox`` through a real server on 127.0.0.1, over the
in-memory inbox (the durable one has its own tests) and the real key store."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
from aiohttp import web

from core.clock import SystemClock
from core.db import Database
from core.inbox import ArrivingEvent, Ignored, ProcessingResult, StoredEvent
from core.models import RunRequest
from core.ports import NullMetrics
from core.security import Signer
from dispatch.history import RunHistoryReader
from dispatch.inbox_memory import MemoryInbox
from switchboard.http import error_middleware
from switchboard.migrate import upgrade
from triggers.auth import Authenticator, KeyRole, KeyStore
from triggers.inbox_api import InboxRoutes


class EchoProcessor:
    async def process(self, event: StoredEvent) -> ProcessingResult:
        if event.body == b"bot":
            return Ignored("a bot's own message")
        return [RunRequest(owner_id="default", service_id="echo")]


@dataclass
class Served:
    http: httpx.AsyncClient
    inbox: MemoryInbox
    keys: KeyStore
    admin: dict[str, str]
    member: dict[str, str]


@pytest.fixture
async def served(database_url: str) -> AsyncIterator[Served]:
    database = Database(database_url)
    await upgrade(database)
    clock = SystemClock()
    keys = KeyStore(database, clock)
    auth = Authenticator(
        keys, Signer(b"k" * 32), clock, runs=RunHistoryReader(database), cache_seconds=0
    )
    inbox = MemoryInbox(
        triggers_configured={"slack", "email:smtp"}, processors={"slack": EchoProcessor()}
    )
    app = web.Application(middlewares=[error_middleware(NullMetrics())])
    app.router.add_routes(InboxRoutes(inbox, auth).route_table())
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    admin_key, _ = await keys.create(role=KeyRole.ADMIN)
    member_key, _ = await keys.create()
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
        yield Served(
            http,
            inbox,
            keys,
            {"Authorization": f"Bearer {admin_key}"},
            {"Authorization": f"Bearer {member_key}"},
        )
    await runner.cleanup()
    await database.dispose()


async def test_suspend_hold_resume_and_discard_over_rest(served: Served) -> None:
    http, admin = served.http, served.admin
    listed = await http.get("/api/v1/triggers", headers=admin)
    assert listed.status_code == 200
    assert [(t["name"], t["state"]) for t in listed.json()["triggers"]] == [
        ("email:smtp", "active"),
        ("slack", "active"),
    ]
    suspended = await http.post("/api/v1/triggers/slack/suspend", headers=admin)
    assert (suspended.status_code, suspended.json()["state"]) == (200, "suspended")
    assert (await served.inbox.accept(_event(b"1"))).held
    await served.inbox.accept(_event(b"2"))
    resumed = (await http.post("/api/v1/triggers/slack/resume", headers=admin)).json()
    assert (resumed["state"], resumed["counts"]["pending"], resumed["backlog"]) == ("active", 2, 2)
    await http.post("/api/v1/triggers/email:smtp/suspend", headers=admin)
    await served.inbox.accept(_event(b"mail", trigger="email:smtp"))
    discarded = await http.post("/api/v1/triggers/email:smtp/discard", headers=admin)
    assert discarded.json() == {"trigger": "email:smtp", "discarded": 1}
    listed = (await http.get("/api/v1/triggers", headers=admin)).json()["triggers"]
    health = {trigger["name"]: trigger for trigger in listed}
    assert health["email:smtp"]["counts"]["discarded"] == 1
    assert health["email:smtp"]["last_received_at"].endswith("Z")
    missing = await http.post("/api/v1/triggers/telegram/suspend", headers=admin)
    assert missing.status_code == 404
    assert missing.json() == {"detail": "trigger 'telegram' not found"}


async def test_inbox_list_pages_filters_and_shows_bodies_only_when_asked(served: Served) -> None:
    http, admin = served.http, served.admin
    for number in range(3):
        await served.inbox.accept(_event(str(number).encode()))
    raw = await served.inbox.accept(_event(b"\xff\xfe", trigger="email:smtp"))
    slack_only = {"trigger": "slack", "limit": "2"}
    first = (await http.get("/api/v1/inbox", params=slack_only, headers=admin)).json()
    assert [e["status"] for e in first["events"]] == ["pending", "pending"]
    assert first["events"][0]["body"] is None and first["events"][0]["headers"] is None
    more = {**slack_only, "cursor": first["next_cursor"], "include": "body"}
    rest = (await http.get("/api/v1/inbox", params=more, headers=admin)).json()
    assert (rest["events"][0]["body"], rest["events"][0]["body_encoding"]) == ("0", "utf-8")
    assert rest["next_cursor"] is None
    shown = await http.get(f"/api/v1/inbox/{raw.id}", params={"include": "body"}, headers=admin)
    assert shown.json()["body_encoding"] == "base64"
    assert base64.b64decode(shown.json()["body"]) == b"\xff\xfe"
    pending = (await http.get("/api/v1/inbox?status=held", headers=admin)).json()
    assert pending == {"events": [], "next_cursor": None}
    gone = await http.get("/api/v1/inbox/evt_nope", headers=admin)
    assert (gone.status_code, gone.json()) == (404, {"detail": "inbox event 'evt_nope' not found"})


BAD_QUERIES = [
    ("status=done", "'status'"),
    ("limit=0", "'limit'"),
    ("limit=501", "'limit'"),
    ("limit=ten", "'limit'"),
    ("include=bodies", "'include'"),
    ("colour=red", "unknown query parameter 'colour'"),
    ("status=held&status=failed", "'status' is given more than once"),
    ("cursor=zzz", "cursor"),
]


async def test_a_bad_query_is_a_400_naming_the_parameter(served: Served) -> None:
    for query, named in BAD_QUERIES:
        answer = await served.http.get(f"/api/v1/inbox?{query}", headers=served.admin)
        assert answer.status_code == 400, query
        assert named in answer.json()["detail"], (query, answer.json())


async def test_replay_answers_the_new_run_ids(served: Served) -> None:
    accepted = await served.inbox.accept(_event(b"hi"))
    await served.inbox.process_pending({"slack": EchoProcessor()})
    replayed = await served.http.post(f"/api/v1/inbox/{accepted.id}/replay", headers=served.admin)
    assert replayed.status_code == 200
    run_ids = replayed.json()["run_ids"]
    assert replayed.json()["event_id"] == accepted.id and len(run_ids) == 1
    newest = (await served.http.get("/api/v1/inbox?limit=1", headers=served.admin)).json()
    assert (newest["events"][0]["replay_of"], newest["events"][0]["run_ids"]) == (
        accepted.id,
        run_ids,
    )


ROUTES = [
    ("GET", "/api/v1/triggers", "listing triggers"),
    ("POST", "/api/v1/triggers/slack/suspend", "suspending a trigger"),
    ("POST", "/api/v1/triggers/slack/resume", "resuming a trigger"),
    ("POST", "/api/v1/triggers/slack/discard", "discarding a trigger's held events"),
    ("GET", "/api/v1/inbox", "listing inbox events"),
    ("GET", "/api/v1/inbox/evt_000001", "reading an inbox event"),
    ("POST", "/api/v1/inbox/evt_000001/replay", "replaying an inbox event"),
]


async def test_every_route_refuses_member_and_one_time_keys_and_no_key(served: Served) -> None:
    await served.inbox.accept(_event(b"x"))
    once, _ = await served.keys.create(one_time=True)
    for method, path, what in ROUTES:
        await _refused_but_to_admin(served, method, path, what, once)


async def _refused_but_to_admin(
    served: Served, method: str, path: str, what: str, once: str
) -> None:
    before = (set(served.inbox.suspended), [entry.status for entry in served.inbox.entries])
    member = await served.http.request(method, path, headers=served.member)
    assert member.status_code == 403
    assert member.json() == {"detail": f"{what} needs an admin key (this key's role is member)"}
    one_time = await served.http.request(method, path, headers={"Authorization": f"Bearer {once}"})
    assert one_time.status_code == 403
    anonymous = await served.http.request(method, path)
    assert anonymous.status_code == 401
    after = (set(served.inbox.suspended), [entry.status for entry in served.inbox.entries])
    assert after == before, f"a refused {method} {path} changed the inbox"
    assert (await served.http.request(method, path, headers=served.admin)).status_code == 200


def _event(body: bytes, *, trigger: str = "slack") -> ArrivingEvent:
    return ArrivingEvent(trigger=trigger, ordering_key="C1", body=body)
