"""``switchboard triggers …`` and ``switchboard inbox …``: the operator's surface in a terminal.

The same :class:`InboxAdmin` and the same JSON bodies as ``/api/v1/triggers`` and
``/api/v1/inbox`` (``--json``), on the data dir and database of the settings, whether or not a
server is running there. Each command opens the services, then hands the port to a ``show_…``
function that only renders (tested against the in-memory inbox).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TextIO

from pydantic import BaseModel

from core.clock import isoformat
from core.inbox import EventStatus, InboxAdmin
from switchboard.app import inbox_admin
from switchboard.cli_parts import open_cli_parts
from switchboard.settings import Settings
from switchboard.terminal import print_table
from triggers.inbox_api import (
    DEFAULT_LIMIT,
    Discarded,
    EventView,
    InboxQuery,
    Replayed,
    TriggerList,
    TriggerView,
    list_events,
)

Show = Callable[[InboxAdmin, argparse.Namespace, TextIO], Awaitable[None]]


def add_inbox_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    """Register the ``triggers`` and ``inbox`` command groups on the top-level subparsers."""
    triggers = commands.add_parser(
        "triggers", help="event sources and their health"
    ).add_subparsers(title="triggers commands")
    p = triggers.add_parser("list", parents=[common], help="each trigger's state and health")
    _as_json(p)
    p.set_defaults(command=InboxCommand(show_triggers))
    for name, helptext, show in (
        ("suspend", "store and acknowledge new events, but hold them", show_suspend),
        ("resume", "process the held events in arrival order, and new ones", show_resume),
        ("discard", "mark every held event discarded (they never run)", show_discard),
    ):
        p = triggers.add_parser(name, parents=[common], help=helptext)
        p.add_argument("trigger", help="slack, whatsapp, email:smtp, email:mailgun, …")
        _as_json(p)
        p.set_defaults(command=InboxCommand(show))

    inbox = commands.add_parser("inbox", help="the events triggers stored").add_subparsers(
        title="inbox commands"
    )
    p = inbox.add_parser("list", parents=[common], help="events, newest first")
    p.add_argument("--trigger")
    p.add_argument("--status", choices=[status.value for status in EventStatus])
    p.add_argument("--limit", type=int, default=DEFAULT_LIMIT)
    p.add_argument("--cursor", help="the next-page cursor a previous list printed")
    p.add_argument("--body", action="store_true", help="with --json: headers and bodies too")
    _as_json(p)
    p.set_defaults(command=InboxCommand(show_events))
    p = inbox.add_parser("show", parents=[common], help="one event")
    p.add_argument("event_id")
    p.add_argument("--body", action="store_true", help="its headers and body too")
    _as_json(p)
    p.set_defaults(command=InboxCommand(show_event))
    p = inbox.add_parser("replay", parents=[common], help="process an event again, as new runs")
    p.add_argument("event_id")
    _as_json(p)
    p.set_defaults(command=InboxCommand(show_replay))


def _as_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="the API's JSON body instead")


@dataclass(frozen=True, slots=True)
class InboxCommand:
    """A command: open the services, hand their InboxAdmin to ``show``."""

    show: Show

    async def __call__(self, args: argparse.Namespace, settings: Settings) -> int:
        async with open_cli_parts(settings) as services:
            await self.show(inbox_admin(services), args, sys.stdout)
        return 0


async def show_triggers(inbox: InboxAdmin, args: argparse.Namespace, out: TextIO) -> None:
    listed = TriggerList(triggers=[TriggerView.of(health) for health in await inbox.triggers()])
    if args.json:
        _print_json(listed, out)
        return
    print_table(
        ["name", "state", "backlog", "pending", "held", "failed", "last received",
         "last processed", "last error"],
        [
            [
                t.name, t.state, str(t.backlog), str(t.counts.get("pending", 0)),
                str(t.counts.get("held", 0)), str(t.counts.get("failed", 0)),
                isoformat(t.last_received_at) or "-", isoformat(t.last_processed_at) or "-",
                _short(t.last_error) or "-",
            ]
            for t in listed.triggers
        ],
        out,
    )  # fmt: skip


async def show_suspend(inbox: InboxAdmin, args: argparse.Namespace, out: TextIO) -> None:
    view = TriggerView.of(await inbox.suspend(args.trigger))
    if args.json:
        _print_json(view, out)
        return
    print(f"suspended {view.name}: new events are stored and held until resume", file=out)


async def show_resume(inbox: InboxAdmin, args: argparse.Namespace, out: TextIO) -> None:
    view = TriggerView.of(await inbox.resume(args.trigger))
    if args.json:
        _print_json(view, out)
        return
    print(f"resumed {view.name}: {view.backlog} event(s) waiting to be processed", file=out)


async def show_discard(inbox: InboxAdmin, args: argparse.Namespace, out: TextIO) -> None:
    answer = Discarded(trigger=args.trigger, discarded=await inbox.discard(args.trigger))
    if args.json:
        _print_json(answer, out)
        return
    print(f"discarded {answer.discarded} held event(s) of {answer.trigger}", file=out)


async def show_events(inbox: InboxAdmin, args: argparse.Namespace, out: TextIO) -> None:
    query = InboxQuery.parse(
        {
            name: value
            for name, value in (
                ("trigger", args.trigger),
                ("status", args.status),
                ("limit", args.limit),
                ("cursor", args.cursor),
                ("include", "body" if args.body else None),
            )
            if value is not None
        },
        naming=lambda name: f"--{name}",
    )
    page = await list_events(inbox, query)
    if args.json:
        _print_json(page, out)
        return
    print_table(
        ["id", "trigger", "status", "received", "attempts", "runs", "note"],
        [
            [
                e.id, e.trigger, e.status.value, isoformat(e.received_at) or "", str(e.attempts),
                ",".join(e.run_ids) or "-", _note(e),
            ]
            for e in page.events
        ],
        out,
    )  # fmt: skip
    if page.next_cursor is not None:
        print(f"more: switchboard inbox list --cursor {page.next_cursor}", file=out)


async def show_event(inbox: InboxAdmin, args: argparse.Namespace, out: TextIO) -> None:
    view = EventView.of(await inbox.event(args.event_id, include_body=args.body))
    if args.json:
        _print_json(view, out)
        return
    fields = view.model_dump(mode="json", exclude={"headers", "body", "body_encoding"})
    for name, value in fields.items():
        shown = ", ".join(value) if isinstance(value, list) else value
        print(f"{name + ':':16} {'-' if shown in (None, '') else shown}", file=out)
    if view.headers is not None:
        print("headers:", file=out)
        for name, value in sorted(view.headers.items()):
            print(f"  {name}: {value}", file=out)
    if view.body is not None:
        print(f"body ({view.body_encoding}):", file=out)
        print(view.body, file=out)


async def show_replay(inbox: InboxAdmin, args: argparse.Namespace, out: TextIO) -> None:
    answer = Replayed(event_id=args.event_id, run_ids=await inbox.replay(args.event_id))
    if args.json:
        _print_json(answer, out)
        return
    made = ", ".join(answer.run_ids) if answer.run_ids else "no run (processing made none)"
    print(f"replayed {answer.event_id}: {made}", file=out)


def _note(event: EventView) -> str:
    if event.error:
        return _short(event.error) or ""
    if event.ignored_reason:
        return f"ignored: {event.ignored_reason}"
    if event.replay_of:
        return f"replay of {event.replay_of}"
    return ""


def _short(text: str | None, width: int = 60) -> str | None:
    if text is None:
        return None
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 1] + "…"


def _print_json(model: BaseModel, out: TextIO) -> None:
    print(json.dumps(model.model_dump(mode="json"), indent=2), file=out)
