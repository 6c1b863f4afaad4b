"""The ``switchboard`` command.

Every command works on the data dir and database the settings name, whether or not a server is
running there. Secrets are printed only where asked for (a new key, on the last line of stdout).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import getpass
import json
import logging
import signal
import sys
from collections.abc import Awaitable, Sequence
from pathlib import Path
from typing import Any

from aiohttp import web

from core.clock import isoformat
from core.errors import SwitchboardError
from scheduler.actions import perform
from switchboard.app import ROLES, create_app
from switchboard.cli_parts import open_cli_parts
from switchboard.config import load_settings
from switchboard.console import fresh_link
from switchboard.inbox_commands import add_inbox_commands
from switchboard.logging import configure_logging
from switchboard.migrate import upgrade
from switchboard.secret_keys import configured, finish_file_rotation, start_file_rotation
from switchboard.server import start_site
from switchboard.services import Services, open_services
from switchboard.settings import Settings
from switchboard.terminal import print_table as _table
from triggers.auth import DEFAULT_OWNER, KeyRole
from triggers.secrets_api import MANAGE_USER_SECRETS


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "command"):
        parser.print_help()
        return 2
    try:
        overrides: dict[str, Any] = {}
        if args.command is serve:
            server = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
            if server:
                overrides["server"] = server
        settings = load_settings(getattr(args, "config", None), **overrides)
        # A command's output is what it prints; library INFO lines (Alembic's) are server talk.
        debug = settings.server.log_level.upper() == "DEBUG"
        quiet = args.command not in (serve, db_upgrade) and not debug
        level = "WARNING" if quiet else settings.server.log_level
        configure_logging(level, settings.server.log_format)
        return _run(args.command(args, settings))
    except SwitchboardError as exc:
        print(f"switchboard: {exc.detail}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _run(coroutine: Awaitable[int]) -> int:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return asyncio.run(coroutine)  # type: ignore[arg-type]
    return uvloop.run(coroutine)  # type: ignore[arg-type]


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, default=argparse.SUPPRESS, help="TOML settings file")
    parser = argparse.ArgumentParser(prog="switchboard", parents=[common], description=__doc__)
    commands = parser.add_subparsers(title="commands")

    p = commands.add_parser(
        "serve", parents=[common], help="run the service (the demo when unconfigured)"
    )
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument(
        "--role",
        default="web,worker,scheduler",
        help="comma-separated: web, worker, scheduler (default all three)",
    )
    p.set_defaults(command=serve)

    db = commands.add_parser("db", help="database administration").add_subparsers(
        title="db commands"
    )
    p = db.add_parser("upgrade", parents=[common], help="apply migrations")
    p.set_defaults(command=db_upgrade)

    p = commands.add_parser(
        "console", parents=[common], help="print a one-time login link for the web console"
    )
    p.set_defaults(command=console_link)

    keys = commands.add_parser("keys", help="API keys").add_subparsers(title="keys commands")
    p = keys.add_parser(
        "create", parents=[common], help="create a key (printed alone on the last line)"
    )
    p.add_argument(
        "--one-time", action="store_true", help="a cwotk- key that starts exactly one run"
    )
    p.add_argument("--name", default="")
    p.add_argument("--owner", default=DEFAULT_OWNER)
    p.add_argument(
        "--role",
        choices=[role.value for role in KeyRole],
        default=KeyRole.MEMBER.value,
        help="admin: also triggers and the inbox, every owner; member (default): its owner's own",
    )
    p.set_defaults(command=keys_create)
    p = keys.add_parser("list", parents=[common], help="list keys (never their secrets)")
    p.add_argument("--owner")
    p.set_defaults(command=keys_list)
    p = keys.add_parser("revoke", parents=[common], help="revoke a key by id or displayed prefix")
    p.add_argument("key")
    p.set_defaults(command=keys_revoke)

    wf = commands.add_parser("workflows", help="workflows").add_subparsers(
        title="workflows commands"
    )
    p = wf.add_parser(
        "add", parents=[common], help="register a PEP 723 FastAPI file (a new version)"
    )
    p.add_argument("file", type=Path)
    p.add_argument("--id", dest="service_id")
    p.add_argument(
        "--owner", default=DEFAULT_OWNER, help="warn about declared secrets this owner lacks"
    )
    p.set_defaults(command=workflows_add)
    p = wf.add_parser("list", parents=[common], help="list workflows and built-in services")
    p.set_defaults(command=workflows_list)
    p = wf.add_parser("remove", parents=[common], help="remove a workflow (its runs stay readable)")
    p.add_argument("service_id")
    p.set_defaults(command=workflows_remove)

    runs = commands.add_parser("runs", help="runs").add_subparsers(title="runs commands")
    p = runs.add_parser("list", parents=[common], help="recent runs, newest first")
    p.add_argument("--status")
    p.add_argument("--owner")
    p.add_argument("--limit", type=int, default=20)
    p.set_defaults(command=runs_list)
    p = runs.add_parser("show", parents=[common], help="a run's request record (JSON)")
    p.add_argument("run_id")
    p.set_defaults(command=runs_show)
    p = runs.add_parser("logs", parents=[common], help="a run's log lines")
    p.add_argument("run_id")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing until the run ends")
    p.set_defaults(command=runs_logs)
    _schedule_commands(commands, common)
    _secret_commands(commands, common)
    add_inbox_commands(commands, common)
    return parser


def _schedule_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    sched = commands.add_parser("schedules", help="schedules").add_subparsers(
        title="schedules commands"
    )
    p = sched.add_parser("add", parents=[common], help="create a schedule")
    p.add_argument("--workflow", required=True, help="service_id of the workflow to run")
    p.add_argument("--cron", required=True, help="5 fields, or 6 with leading seconds, or @daily")
    p.add_argument("--timezone", default="UTC", help="IANA zone (default UTC)")
    p.add_argument("--inputs", default="{}", help="JSON object given to the workflow")
    p.add_argument(
        "--deliver-to",
        help="slack:<channel>, slack:<team>/<channel>, whatsapp:<+number>, email:<address>, "
        "webhook:<url> (default: none)",
    )
    p.add_argument("--id", dest="schedule_id")
    p.add_argument("--owner", default=DEFAULT_OWNER)
    p.add_argument("--misfire", choices=["skip", "run_once", "run_all"], default="skip")
    p.add_argument("--misfire-grace", type=float, default=3600.0, help="seconds")
    p.add_argument("--overlap", choices=["allow", "skip", "queue"], default="allow")
    p.add_argument("--jitter", type=float, default=0.0, help="seconds, at most")
    p.set_defaults(command=schedules_add)
    p = sched.add_parser("list", parents=[common], help="schedules with next/last fire and counts")
    p.add_argument("--owner")
    p.set_defaults(command=schedules_list)
    for name, helptext in (
        ("show", "a schedule and its recent runs (JSON)"),
        ("pause", "stop firing (run-now still works)"),
        ("resume", "fire again from now on"),
        ("remove", "delete a schedule (its runs stay readable)"),
        ("run-now", "start one run at once"),
    ):
        p = sched.add_parser(name, parents=[common], help=helptext)
        p.add_argument("schedule_id")
        p.set_defaults(command=schedules_action, action=name)
    p = sched.add_parser(
        "preview", parents=[common], help="next fire times of a schedule or --cron"
    )
    p.add_argument("schedule_id", nargs="?")
    p.add_argument("--cron")
    p.add_argument("--timezone", default="UTC")
    p.add_argument("--count", type=int, default=5)
    p.set_defaults(command=schedules_preview)


def _secret_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    sec = commands.add_parser("secrets", help="secrets given to workflows").add_subparsers(
        title="secrets commands"
    )
    p = sec.add_parser(
        "set", parents=[common], help="store a value, read from stdin or a hidden prompt"
    )
    p.add_argument("name", help="an environment variable name, like SLACK_BOT_TOKEN")
    p.add_argument("--workflow", help="only for this workflow's runs (wins over owner-wide)")
    p.add_argument("--owner", default=DEFAULT_OWNER)
    p.set_defaults(command=secrets_set)
    p = sec.add_parser("list", parents=[common], help="names, scopes and times (never values)")
    p.add_argument("--owner")
    p.set_defaults(command=secrets_list)
    p = sec.add_parser("unset", parents=[common], help="delete a value")
    p.add_argument("name")
    p.add_argument("--workflow")
    p.add_argument("--owner", default=DEFAULT_OWNER)
    p.set_defaults(command=secrets_unset)
    p = sec.add_parser(
        "rotate-key",
        parents=[common],
        help="re-encrypt every data key under a new master key (README 'Secrets')",
    )
    p.set_defaults(command=secrets_rotate_key)
    p = sec.add_parser("audit", parents=[common], help="who set, deleted or re-keyed what, when")
    p.add_argument("--owner")
    p.add_argument("--limit", type=int, default=50)
    p.set_defaults(command=secrets_audit)


# ---- serve ---------------------------------------------------------------------------------


async def serve(args: argparse.Namespace, settings: Settings) -> int:
    roles = {role.strip() for role in args.role.split(",") if role.strip()}
    if not roles or roles - ROLES:
        raise SwitchboardError(f"--role takes a comma-separated list of {sorted(ROLES)}")

    def announce_key(key: str) -> None:
        path = settings.server.data_dir / "admin.key"
        print(f"\nAdmin API key (saved in {path}, mode 0600):\n{key}\n", flush=True)

    def announce_console(link: str) -> None:
        print(f"Console: {link}\n", flush=True)

    app = create_app(
        settings, roles=roles, on_admin_key=announce_key, on_console_link=announce_console
    )
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    try:
        await runner.setup()
    except BaseException:
        # A resource refused to start (say, runtime.sandbox = "bwrap" on a host without it):
        # close what had started, then let main() print the reason.
        await runner.cleanup()
        raise
    await start_site(runner, settings.server, host=settings.server.host, port=settings.server.port)
    # Everything alive now (modules, SQLAlchemy's compiled caches, pydantic schemas) lives as long
    # as the process: move it out of the collector's sight. Without this, each full collection
    # walks ~100k long-lived objects and stalls the event loop for 60-80 ms (measured under load).
    gc.collect()
    gc.freeze()
    logging.getLogger("switchboard").info(
        "serving on %s (roles: %s)", settings.server.base_url(), ",".join(sorted(roles))
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    logging.getLogger("switchboard").info("shutting down: finishing or handing back leased runs")
    await runner.cleanup()
    return 0


# ---- administration ------------------------------------------------------------------------


async def db_upgrade(args: argparse.Namespace, settings: Settings) -> int:
    async with open_services(settings, migrate=False) as services:
        await upgrade(services.database)
    print("database is at the latest schema")
    return 0


async def console_link(args: argparse.Namespace, settings: Settings) -> int:
    async with open_services(settings) as services:
        link = await fresh_link(services)
    if link is None:
        raise SwitchboardError(
            "no admin key yet: start the server once, or `keys create --role admin`"
        )
    minutes = settings.console.login_link_minutes
    print(f"Console login link (works once, for {minutes:g} minutes):")
    print(link)
    return 0


async def keys_create(args: argparse.Namespace, settings: Settings) -> int:
    services: Services
    async with open_cli_parts(settings) as services:
        key, info = await services.keys.create(
            owner_id=args.owner, name=args.name, one_time=args.one_time, role=KeyRole(args.role)
        )
    kind = "one-time key" if info.one_time else "key"
    print(
        f"created {kind} {info.id} for owner {info.owner_id} ({info.name}) with role {info.role}; "
        "it is shown only once:"
    )
    print(key)
    return 0


async def keys_list(args: argparse.Namespace, settings: Settings) -> int:
    async with open_cli_parts(settings) as services:
        keys = await services.keys.list(args.owner)
    _table(
        ["id", "owner", "name", "prefix", "kind", "role", "created", "state"],
        [
            [
                k.id,
                k.owner_id,
                k.name,
                k.prefix + "…",
                "one-time" if k.one_time else "reusable",
                k.role.value,
                isoformat(k.created_at) or "",
                "revoked" if k.revoked_at else ("used" if k.used_at else "active"),
            ]
            for k in keys
        ],
    )
    return 0


async def keys_revoke(args: argparse.Namespace, settings: Settings) -> int:
    async with open_cli_parts(settings) as services:
        key_id = await services.keys.revoke(args.key)
    print(f"revoked {key_id}" if key_id == args.key else f"revoked {key_id} ({args.key})")
    return 0


async def workflows_add(args: argparse.Namespace, settings: Settings) -> int:
    async with open_cli_parts(settings) as services:
        info = await services.registry.add(args.file, args.service_id)
        warnings = await services.unset_secret_warnings(info, args.owner)
    print(
        f"registered {info.service_id} version {info.version} (environment {info.lock_hash[:12]})"
    )
    for warning in warnings:
        print(warning)
    return 0


async def workflows_list(args: argparse.Namespace, settings: Settings) -> int:
    async with open_cli_parts(settings) as services:
        workflows = await services.registry.list()
        # manage_user_secrets is answered by the web edge itself (never a stored run).
        builtins = sorted([*services.builtins, MANAGE_USER_SECRETS])
    rows = [
        [w.service_id, f"v{w.version}", "workflow", w.lock_hash[:12], w.updated_at]
        for w in workflows
    ]
    rows += [[name, "-", "built-in", "-", "-"] for name in builtins]
    _table(["id", "version", "kind", "environment", "updated"], rows)
    return 0


async def workflows_remove(args: argparse.Namespace, settings: Settings) -> int:
    async with open_cli_parts(settings) as services:
        await services.registry.remove(args.service_id)
    print(f"removed {args.service_id}")
    return 0


async def runs_list(args: argparse.Namespace, settings: Settings) -> int:
    async with open_cli_parts(settings) as services:
        runs = await services.queue.list_runs(
            owner_id=args.owner, status=args.status, limit=args.limit
        )
    _table(
        ["id", "service", "status", "source", "created", "ms", "http"],
        [
            [
                r.id,
                r.service_id or "(provisioned)",
                r.status.value,
                r.source.value,
                isoformat(r.created_at) or "",
                str(r.to_api()["durationMs"] or ""),
                str(r.response_status or ""),
            ]
            for r in runs
        ],
    )
    return 0


async def runs_show(args: argparse.Namespace, settings: Settings) -> int:
    async with open_cli_parts(settings) as services:
        record = await services.queue.get(args.run_id)
    if record is None:
        raise SwitchboardError(f"request {args.run_id!r} not found")
    print(json.dumps(record.to_api(), indent=2))
    return 0


async def runs_logs(args: argparse.Namespace, settings: Settings) -> int:
    async with open_cli_parts(settings) as services:
        if await services.queue.get(args.run_id) is None:
            raise SwitchboardError(f"request {args.run_id!r} not found")
        async for entries in services.gateway.follow_logs(args.run_id, follow=args.follow):
            for entry in entries:
                print(f"{isoformat(entry.created_at)} {entry.stream:6} {entry.message}", flush=True)
    return 0


# ---- schedules ------------------------------------------------------------------------------


async def schedules_add(args: argparse.Namespace, settings: Settings) -> int:
    try:
        inputs = json.loads(args.inputs)
    except ValueError as exc:
        raise SwitchboardError(f"--inputs is not valid JSON: {exc}") from exc
    body = {
        "id": args.schedule_id,
        "service_id": args.workflow,
        "cron": args.cron,
        "timezone": args.timezone,
        "inputs": inputs,
        "deliver_to": args.deliver_to,
        "misfire_policy": args.misfire,
        "misfire_grace": args.misfire_grace,
        "overlap_policy": args.overlap,
        "jitter": args.jitter,
    }
    async with open_cli_parts(settings) as services:
        created = await perform(services.schedules, args.owner, body)
    print(f"created schedule {created['id']}; next fire at {created['next_fire_at']}")
    return 0


async def schedules_list(args: argparse.Namespace, settings: Settings) -> int:
    async with open_cli_parts(settings) as services:
        listed = await services.schedules.list_schedules(args.owner)
    _table(
        ["id", "workflow", "cron", "timezone", "state", "next fire", "last fire", "fired",
         "skipped", "missed"],
        [
            [
                s.id, s.service_id, s.cron, s.timezone, "paused" if s.paused else "active",
                isoformat(s.next_fire_at) or "-", isoformat(s.last_fire_at) or "-",
                str(s.fired_count), str(s.skipped_count), str(s.missed_count),
            ]
            for s in listed
        ],
    )  # fmt: skip
    return 0


async def schedules_action(args: argparse.Namespace, settings: Settings) -> int:
    action = {"show": "get", "remove": "delete", "run-now": "run_now"}.get(args.action, args.action)
    async with open_cli_parts(settings) as services:
        answer = await perform(
            services.schedules, None, {"action": action, "schedule_id": args.schedule_id}
        )
    if action == "get":
        print(json.dumps(answer, indent=2))
    elif action == "run_now":
        print(f"started run {answer['request_id']}")
    else:
        print(f"{args.action}: {args.schedule_id}")
    return 0


async def schedules_preview(args: argparse.Namespace, settings: Settings) -> int:
    body: dict[str, Any] = {"action": "preview", "count": args.count}
    if args.schedule_id:
        body["schedule_id"] = args.schedule_id
    elif args.cron:
        body.update(cron=args.cron, timezone=args.timezone)
    else:
        raise SwitchboardError("preview needs a schedule id or --cron")
    async with open_cli_parts(settings) as services:
        answer = await perform(services.schedules, None, body)
    for moment in answer["fire_times"]:
        print(moment)
    return 0


# ---- secrets --------------------------------------------------------------------------------

CLI_ACTOR = "cli"


def _read_value(name: str) -> str:
    """The value from a hidden prompt on a terminal, else all of stdin (one final newline
    dropped): never from argv, where every user of the host could read it."""
    if sys.stdin.isatty():
        return getpass.getpass(f"value of {name} (not shown): ")
    value = sys.stdin.read()
    return value[:-1] if value.endswith("\n") else value


async def secrets_set(args: argparse.Namespace, settings: Settings) -> int:
    value = _read_value(args.name)
    async with open_cli_parts(settings) as services:
        await services.keys.ensure_owner(args.owner)
        info = await services.secrets.put(
            args.owner, args.name, value, workflow_id=args.workflow, actor=CLI_ACTOR
        )
    print(f"set {info.name} for owner {info.owner_id} ({info.scope})")
    return 0


async def secrets_list(args: argparse.Namespace, settings: Settings) -> int:
    async with open_cli_parts(settings) as services:
        listed = await services.secrets.list_secrets(args.owner)
    _table(
        ["name", "owner", "scope", "updated", "by"],
        [
            [s.name, s.owner_id, s.scope, isoformat(s.updated_at) or "", s.updated_by]
            for s in listed
        ],
    )
    return 0


async def secrets_unset(args: argparse.Namespace, settings: Settings) -> int:
    async with open_cli_parts(settings) as services:
        await services.secrets.remove(
            args.owner, args.name, workflow_id=args.workflow, actor=CLI_ACTOR
        )
    scope = f"workflow {args.workflow}" if args.workflow else "owner"
    print(f"unset {args.name} for owner {args.owner} ({scope})")
    return 0


async def secrets_rotate_key(args: argparse.Namespace, settings: Settings) -> int:
    """Key file: a new ``secrets.key`` (the old kept as ``secrets.key.old`` until the re-encryption
    has committed). ``server.secrets_key``: the operator has set the new key there and the old one
    as ``server.secrets_key_previous``; this re-encrypts, then the previous one can go."""
    from_file = not configured(settings)
    data_dir = settings.server.data_dir
    async with open_cli_parts(settings) as services:
        resumed = from_file and not start_file_rotation(data_dir)
        rotation = await services.secrets.rotate(actor=CLI_ACTOR)
        if from_file:
            finish_file_rotation(data_dir)
    if resumed:
        print(f"resumed the rotation to the key in {data_dir / 'secrets.key'}")
    print(
        f"{rotation.rewrapped} of {rotation.data_keys} data keys re-encrypted; every one is now "
        f"under master key {rotation.master_key_id}"
    )
    if from_file:
        print(f"the old key is retired; back up {data_dir / 'secrets.key'}")
    else:
        print("the old key is no longer needed: remove server.secrets_key_previous everywhere")
    return 0


async def secrets_audit(args: argparse.Namespace, settings: Settings) -> int:
    async with open_cli_parts(settings) as services:
        events = await services.secrets.audit(args.owner, limit=args.limit)
    _table(
        ["at", "action", "actor", "owner", "name", "workflow", "detail"],
        [
            [
                isoformat(e.at) or "", e.action, e.actor, e.owner_id or "-", e.name or "-",
                e.workflow_id or "-", e.detail,
            ]
            for e in events
        ],
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
