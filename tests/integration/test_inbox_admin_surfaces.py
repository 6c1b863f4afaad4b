"""The operator's surfaces over the durable inbox, on SQLite and PostgreSQL: REST routes through
a real server on 127.0.0.1 with real keys, and the CLI's commands on the same database."""

from __future__ import annotations

import argparse
import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from aiohttp import web
from sqlalchemy import select

from core.clock import SystemClock
from core.db import Database
from core.inbox import ArrivingEvent, EventStatus
from core.ports import NullMetrics
from core.security import Signer
from dispatch.history import RunHistoryReader
from dispatch.tables import runs
from switchboard.app import inbox_admin
from switchboard.channels import configured_triggers
from switchboard.cli import _parser
from switchboard.http import error_middleware
from switchboard.inbox_commands import InboxCommand
from switchboard.services import open_services
from tests.conftest import Live, LiveFactory, make_settings
from tests.fakes.slack_api import SlackApi
from tests.fakes.twilio_api import FakeTwilioApi
from tests.integration.inbox_helpers import InboxNode, RunPerMessage, event, wait_for_status
from triggers.auth import Authenticator, KeyRole, KeyStore
from triggers.inbox_api import InboxRoutes

ALWAYS_CONFIGURED = [
    "console:email",
    "console:slack",
    "console:whatsapp",
    "email:mailgun",
    "email:sendgrid",
    "email:smtp",
]
"""Trigger names a server without Slack or WhatsApp has: email and the chat tester's."""


@dataclass
class Served:
    http: httpx.AsyncClient
    node: InboxNode
    admin: dict[str, str]
    member: dict[str, str]


@pytest.fixture
async def served(database: Database) -> AsyncIterator[Served]:
    clock = SystemClock()
    keys = KeyStore(database, clock)
    await keys.ensure_owner("default")
    auth = Authenticator(
        keys, Signer(b"k" * 32), clock, runs=RunHistoryReader(database), cache_seconds=0
    )
    node = InboxNode(database, clock, triggers=("test", "other"))
    node.commit.start()
    app = web.Application(middlewares=[error_middleware(NullMetrics())])
    app.router.add_routes(InboxRoutes(node.store, auth).route_table())
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    admin_key, _ = await keys.create(role=KeyRole.ADMIN)
    member_key, _ = await keys.create()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    async with httpx.AsyncClient(base_url=url, timeout=20) as http:
        yield Served(
            http,
            node,
            {"Authorization": f"Bearer {admin_key}"},
            {"Authorization": f"Bearer {member_key}"},
        )
    await runner.cleanup()
    await node.commit.aclose()


async def test_suspend_hold_resume_in_order_and_discard_over_rest(served: Served) -> None:
    http, admin, node = served.http, served.admin, served.node
    suspended = await http.post("/api/v1/triggers/test/suspend", headers=admin)
    assert (suspended.status_code, suspended.json()["state"]) == (200, "suspended")
    held = [await node.accept(event(text)) for text in ("one", "two", "three")]
    assert all(accepted.held for accepted in held)
    listed = (await http.get("/api/v1/inbox?status=held&trigger=test", headers=admin)).json()
    assert [e["id"] for e in listed["events"]] == [a.id for a in reversed(held)]
    channel = RunPerMessage()
    async with AsyncExitStack() as stack:
        await node.processor({"test": channel}, owner="node-a").start(stack)
        resumed = (await http.post("/api/v1/triggers/test/resume", headers=admin)).json()
        assert resumed["state"] == "active"
        await wait_for_status(node, held[-1].id, EventStatus.PROCESSED)
        await wait_for_status(node, held[0].id, EventStatus.PROCESSED)
    assert channel.seen == ["one", "two", "three"], "held events are processed in arrival order"
    await http.post("/api/v1/triggers/other/suspend", headers=admin)
    await node.accept(ArrivingEvent(trigger="other", ordering_key="c", body=b"{}"))
    discarded = await http.post("/api/v1/triggers/other/discard", headers=admin)
    assert discarded.json() == {"trigger": "other", "discarded": 1}
    listed_triggers = (await http.get("/api/v1/triggers", headers=admin)).json()["triggers"]
    health = {trigger["name"]: trigger for trigger in listed_triggers}
    assert health["test"]["counts"]["processed"] == 3 and health["test"]["backlog"] == 0
    assert health["other"]["counts"]["discarded"] == 1 and health["other"]["state"] == "suspended"
    assert (await http.post("/api/v1/triggers/nope/resume", headers=admin)).status_code == 404


async def test_list_show_and_replay_over_rest(served: Served, database: Database) -> None:
    http, admin, node = served.http, served.admin, served.node
    channel = RunPerMessage()
    async with AsyncExitStack() as stack:
        await node.processor({"test": channel}, owner="node-a").start(stack)
        accepted = await node.accept(event("hello", dedupe="d1"))
        await wait_for_status(node, accepted.id, EventStatus.PROCESSED)
        shown = (await http.get(f"/api/v1/inbox/{accepted.id}?include=body", headers=admin)).json()
        assert shown["status"] == "processed" and shown["body_encoding"] == "utf-8"
        assert json.loads(shown["body"])["text"] == "hello" and len(shown["run_ids"]) == 1
        replayed = await http.post(f"/api/v1/inbox/{accepted.id}/replay", headers=admin)
        assert replayed.status_code == 200, replayed.text
        run_ids = replayed.json()["run_ids"]
        assert len(run_ids) == 1 and run_ids != shown["run_ids"]
    async with database.read() as conn:
        stored = set((await conn.execute(select(runs.c.id))).scalars())
    assert {*run_ids, *shown["run_ids"]} <= stored, "the replay made a second, real run"
    newest = (await http.get("/api/v1/inbox?limit=1", headers=admin)).json()
    assert newest["events"][0]["replay_of"] == accepted.id and newest["next_cursor"] is not None
    rest = await http.get(f"/api/v1/inbox?limit=1&cursor={newest['next_cursor']}", headers=admin)
    assert [e["id"] for e in rest.json()["events"]] == [accepted.id]
    assert (await http.get("/api/v1/inbox?limit=9999", headers=admin)).status_code == 400
    for method, path in (
        ("GET", "/api/v1/triggers"),
        ("POST", "/api/v1/triggers/test/suspend"),
        ("GET", "/api/v1/inbox"),
        ("GET", f"/api/v1/inbox/{accepted.id}"),
        ("POST", f"/api/v1/inbox/{accepted.id}/replay"),
    ):
        refused = await http.request(method, path, headers=served.member)
        assert refused.status_code == 403 and "needs an admin key" in refused.json()["detail"]
    assert (await node.store.triggers())[1].state == "active", "the member's suspend did nothing"


async def test_the_cli_commands_work_on_the_servers_database(
    database_url: str, database: Database, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    node = InboxNode(database, SystemClock())
    node.commit.start()
    try:
        accepted = await node.accept(event("from the cli"))
    finally:
        await node.commit.aclose()
    settings = make_settings(tmp_path / "data", database_url, tmp_path / "cache", 0)

    async def cli(*argv: str) -> str:
        args: argparse.Namespace = _parser().parse_args(argv)
        assert isinstance(args.command, InboxCommand)
        assert await args.command(args, settings) == 0
        return capsys.readouterr().out

    listed = json.loads(await cli("inbox", "list", "--json"))
    assert [e["id"] for e in listed["events"]] == [accepted.id]
    table = await cli("inbox", "list", "--status", "pending")
    assert accepted.id in table and "pending" in table
    shown = await cli("inbox", "show", accepted.id, "--body")
    assert "from the cli" in shown and "x-test: 1" in shown
    assert "(none)" in await cli("inbox", "list", "--status", "failed")
    # The CLI starts no channel, yet lists what the server would: email and the console's chat
    # tester are always configured.
    listed_triggers = json.loads(await cli("triggers", "list", "--json"))["triggers"]
    assert [t["name"] for t in listed_triggers] == ALWAYS_CONFIGURED


async def test_the_server_serves_the_routes_to_its_admin_key_only(live: Live) -> None:
    admin_key = (live.settings.server.data_dir / "admin.key").read_text().strip()
    async with httpx.AsyncClient(base_url=live.url, timeout=20) as http:
        listed = await http.get("/api/v1/triggers", headers={"Authorization": admin_key})
        assert listed.status_code == 200
        # The email channel is always configured (send_email's sender, the SMTP intake), and
        # the console's chat tester.
        names = [trigger["name"] for trigger in listed.json()["triggers"]]
        assert names == ALWAYS_CONFIGURED
        page = await http.get("/api/v1/inbox", headers={"Authorization": admin_key})
        assert page.json() == {"events": [], "next_cursor": None}
        member = await http.get("/api/v1/inbox", headers={"Authorization": live.key})
        assert member.status_code == 403


async def test_the_cli_knows_every_trigger_a_server_with_all_channels_registers(
    live_factory: LiveFactory, slack: SlackApi, twilio: FakeTwilioApi
) -> None:
    # The CLI starts no channel: configured_triggers must name what the started channels do.
    live = await live_factory.start(
        slack=slack.slack_section("signing-secret", workflow="echo"),
        whatsapp=twilio.whatsapp_section(workflow="echo"),
    )
    names = live.services.inbox.trigger_names
    assert {"slack", "whatsapp", "email:smtp"} <= set(names)
    assert sorted(configured_triggers(live.services.settings)) == names
    async with open_services(live.services.settings, migrate=False) as services:
        admin = inbox_admin(services)
        assert [health.name for health in await admin.triggers()] == names
