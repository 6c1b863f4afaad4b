"""``switchboard triggers …`` and ``switchboard inbox …``: the real parser, the in-memory inbox."""

from __future__ import annotations

import argparse
import io
import json

import pytest

from core.errors import BadRequest
from core.inbox import ArrivingEvent, ProcessingResult, StoredEvent
from core.models import RunRequest
from dispatch.inbox_memory import MemoryInbox
from switchboard.cli import _parser
from switchboard.inbox_commands import Show


class EchoProcessor:
    async def process(self, event: StoredEvent) -> ProcessingResult:
        if event.body == b"boom":
            raise RuntimeError("the provider said no")
        return [RunRequest(owner_id="default", service_id="echo")]


async def run(inbox: MemoryInbox, *argv: str) -> str:
    """What ``switchboard <argv>`` prints, with ``inbox`` as the services' InboxAdmin."""
    args = _parser().parse_args(argv)
    show: Show = args.command.show
    out = io.StringIO()
    await show(inbox, args, out)
    return out.getvalue()


@pytest.fixture
async def inbox() -> MemoryInbox:
    inbox = MemoryInbox(triggers_configured={"slack", "whatsapp"}, processors={})
    inbox.processors["slack"] = EchoProcessor()
    for body in (b"one", b"boom", b"two"):
        await inbox.accept(ArrivingEvent(trigger="slack", ordering_key="C1", body=body))
    await inbox.process_pending(inbox.processors)
    return inbox


def cells(output: str, first: str) -> list[str]:
    for line in output.splitlines():
        if line.split()[:1] == [first]:
            return line.split()
    raise AssertionError(f"no row {first!r} in\n{output}")


async def test_triggers_list_as_a_table_and_as_the_apis_json(inbox: MemoryInbox) -> None:
    table = await run(inbox, "triggers", "list")
    assert table.splitlines()[0].split()[:3] == ["name", "state", "backlog"]
    assert cells(table, "slack")[:6] == ["slack", "active", "0", "0", "0", "1"]
    assert "RuntimeError: the provider said no" in table
    assert cells(table, "whatsapp")[1:3] == ["active", "0"]
    answer = json.loads(await run(inbox, "triggers", "list", "--json"))
    assert [t["name"] for t in answer["triggers"]] == ["slack", "whatsapp"]
    assert answer["triggers"][0]["counts"]["processed"] == 2


async def test_suspend_resume_and_discard(inbox: MemoryInbox) -> None:
    assert (await run(inbox, "triggers", "suspend", "slack")).startswith("suspended slack")
    await inbox.accept(ArrivingEvent(trigger="slack", ordering_key="C1", body=b"held"))
    state = json.loads(await run(inbox, "triggers", "resume", "whatsapp", "--json"))
    assert state["state"] == "active"
    assert await run(inbox, "triggers", "discard", "slack") == (
        "discarded 1 held event(s) of slack\n"
    )
    assert "resumed slack: 0 event(s) waiting" in await run(inbox, "triggers", "resume", "slack")


async def test_inbox_list_filters_pages_and_notes(inbox: MemoryInbox) -> None:
    table = await run(inbox, "inbox", "list", "--status", "failed")
    assert cells(table, "evt_000002")[2] == "failed"
    assert "evt_000001" not in table
    first = await run(inbox, "inbox", "list", "--limit", "2")
    assert "more: switchboard inbox list --cursor 1" in first
    rest = json.loads(await run(inbox, "inbox", "list", "--limit", "2", "--cursor", "1", "--json"))
    assert [e["id"] for e in rest["events"]] == ["evt_000001"] and rest["next_cursor"] is None
    with_body = json.loads(await run(inbox, "inbox", "list", "--body", "--json"))
    assert with_body["events"][0]["body"] == "two"
    with pytest.raises(BadRequest, match="--limit"):
        await run(inbox, "inbox", "list", "--limit", "0")
    with pytest.raises(SystemExit):  # argparse refuses a status that does not exist
        _parser().parse_args(["inbox", "list", "--status", "done"])


async def test_inbox_show_and_replay(inbox: MemoryInbox) -> None:
    shown = await run(inbox, "inbox", "show", "evt_000001", "--body")
    assert "status:          processed" in shown
    assert shown.rstrip().endswith("body (utf-8):\none")
    assert "body" not in (await run(inbox, "inbox", "show", "evt_000001")).split(":")[-2]
    replayed = await run(inbox, "inbox", "replay", "evt_000001")
    assert replayed.startswith("replayed evt_000001: run_memory_")
    newest = json.loads(await run(inbox, "inbox", "show", "evt_000004", "--json"))
    assert newest["replay_of"] == "evt_000001"


def test_every_command_is_reachable_from_the_parser() -> None:
    for argv in (
        ["triggers", "list"],
        ["triggers", "suspend", "x"],
        ["triggers", "resume", "x"],
        ["triggers", "discard", "x"],
        ["inbox", "list"],
        ["inbox", "show", "e"],
        ["inbox", "replay", "e"],
    ):
        args = _parser().parse_args(argv)
        assert isinstance(args, argparse.Namespace) and callable(args.command.show)
