"""Slack Socket Mode intake: envelopes/s through the socket into the inbox (issue 17).

Usage (from the repository root)::

    .venv/bin/python -m bench.socket_mode [--events 5000] [--window 100] [--backend sqlite|postgres]

``switchboard serve --role web`` in Socket Mode, its ``[slack] api_url`` at the fake Web API of
tests/fakes/slack_api.py (in this process), whose Socket Mode end sends distinct ``app_mention``
envelopes keeping ``--window`` un-acked at once and times each from its send to its ack (the
server acks after the inbox commit). Reference, in the same run: a ~20-line client in this
process on the same fake that group-commits each payload into SQLite (bench/reference.py's
writer, ``synchronous=FULL``) before acking; it shares this process's CPU with the fake, the
server does not. Afterwards every acked envelope must be in ``inbox_events``. Markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench import events, report
from bench.harness import Backend, Store, postgres_store, sqlite_store, start_switchboard
from bench.intake import switchboard_env
from bench.reference import GroupCommit
from tests.fakes.slack_api import SlackApi
from tests.fakes.slack_socket import SocketMode
from tests.pgserver import ThrowawayPostgres

WARMUP = 200
Row = list[object]


async def pump(fake: SocketMode, count: int, window: int, first: int) -> tuple[float, list[float]]:
    """Send ``count`` envelopes, at most ``window`` un-acked; (seconds, ack latencies ms)."""
    sent_at: dict[str, float] = {}
    started = time.monotonic()
    for number in range(first, first + count):
        await fake.wait_for(lambda: len(fake.sent) - len(fake.acks) < window, timeout=30)
        payload = json.loads(events.slack_mention(number))
        envelope = await fake.send("events_api", payload)
        sent_at[envelope] = time.monotonic()
    await fake.wait_for(lambda: len(fake.acks) >= len(fake.sent), timeout=60)
    elapsed = time.monotonic() - started
    return elapsed, [(fake.acked_at[e] - t) * 1000 for e, t in sent_at.items()]


async def measure(fake: SocketMode, count: int, window: int) -> tuple[float, list[float]]:
    await pump(fake, WARMUP, window, 1)
    return await pump(fake, count, window, 1_000_000)


async def reference_client(fake: SocketMode, database: Path) -> None:
    """Connect, then for each envelope: group-commit its payload, ack."""
    store = GroupCommit(str(database))
    writer = asyncio.create_task(store.run())
    takes: set[asyncio.Task[None]] = set()
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(fake.ticket("xapp-ref")["url"]) as ws:

            async def take(envelope: dict[str, Any]) -> None:
                await store.store("slack", json.dumps(envelope["payload"]).encode())
                await ws.send_str(json.dumps({"envelope_id": envelope["envelope_id"]}))

            try:
                async for frame in ws:
                    message = json.loads(frame.data)
                    if "envelope_id" in message:
                        task = asyncio.create_task(take(message))
                        takes.add(task)
                        task.add_done_callback(takes.discard)
            finally:
                writer.cancel()


def result(name: str, backend: str, seconds: float, acks: list[float], stored: int) -> Row:
    return [
        name, backend, len(acks), f"{len(acks) / seconds:,.0f}",
        report.fmt_ms(report.percentile(acks, 50)), report.fmt_ms(report.percentile(acks, 99)),
        stored,
    ]  # fmt: skip


async def run(backend: Backend, count: int, window: int, work: Path) -> list[Row]:
    rows: list[Row] = []
    with contextlib.ExitStack() as stack:
        pg = stack.enter_context(ThrowawayPostgres()) if backend == "postgres" else None
        store: Store = postgres_store(pg, work, "socket") if pg else sqlite_store(work, "socket")
        async with SlackApi.running() as slack:
            fake = slack.socket
            env = {
                **switchboard_env(slack.api_url),
                "SWITCHBOARD_SLACK__SOCKET_MODE": "true",
                "SWITCHBOARD_SLACK__APP_TOKEN": "xapp-bench",
            }
            server = await start_switchboard(store, env, "web", work, "socket-mode")
            try:
                await fake.wait_for(lambda: fake.links, timeout=30)
                seconds, acks = await measure(fake, count, window)
                where = "select count(*) from inbox_events where trigger = 'slack:socket'"
                stored = await store.count(where) - WARMUP
                rows.append(result("switchboard", backend, seconds, acks, stored))
            finally:
                server.stop()
        async with SlackApi.running() as slack:
            fake = slack.socket
            client = asyncio.create_task(reference_client(fake, work / "reference.db"))
            await fake.wait_for(lambda: fake.links, timeout=30)
            seconds, acks = await measure(fake, count, window)
            client.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await client
            reference = Store("sqlite", work, sqlite_file="reference.db")
            stored = await reference.count("select count(*) from events") - WARMUP
            rows.append(result("reference", "sqlite", seconds, acks, stored))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--window", type=int, default=100, help="un-acked envelopes at once")
    parser.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="sb-bench-socket-") as tmp:
        rows = asyncio.run(run(args.backend, args.events, args.window, Path(tmp)))
    header = ["server", "backend", "events", "events/s", "ack p50 ms", "ack p99 ms", "stored"]
    print(f"window {args.window} un-acked envelopes, {report.code_version()}", file=sys.stderr)
    print("\n".join(report.table(header, rows, right=2)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
