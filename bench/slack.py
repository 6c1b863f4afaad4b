"""Slack intake benchmark: signed ``app_mention`` events accepted per second, ack latency, and
mention → reply latency for ``echo``.

Usage (from the repository root)::

    .venv/bin/python bench/slack.py [--duration 8] [--connections 50] [--replies 30]
        [--database sqlite|postgres] [--profile FILE]

1. Intake: ``switchboard serve --role web`` (SQLite, or with ``--database postgres`` a throwaway
   PostgreSQL from tests/pgserver.py) with ``[slack]`` pointed at the fake Slack
   Web API of ``tests/fakes/slack_api.py`` (running in this process). ``wrk`` replays pre-signed
   ``app_mention`` events, each a different message (its own event id and ts; signatures made with
   slack_sdk's ``SignatureVerifier``) at ``--connections`` connections. A 2 s warm-up at 10
   connections (events of its own) comes first. Afterwards the ``runs`` table must hold one run
   per distinct event acknowledged.
2. Mention → reply: ``switchboard serve`` (web and worker); one signed mention at a time, timed
   from the POST to the moment the fake receives the ``chat.postMessage`` in that thread.

Prints a Markdown section (append it to bench/RESULTS.md). All traffic is to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from slack_sdk.signature import SignatureVerifier

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import run as bench  # noqa: E402  (bench/run.py: server process, wrk parsing)

from tests.fakes.slack_api import BOT_USER_ID, SlackApi  # noqa: E402

SECRET = "bench-signing-secret-0123456789ab"
LUA_TEMPLATE = """
dofile({COUNTS})
local pool = {POOL}
local n, index
function init(args)
   n = #pool
   index = id * math.floor(n / 2)
   reset_counts()
end
function request()
   sent = sent + 1
   index = index % n + 1
   return pool[index]
end
"""


def mention_body(number: int, channel: str = "C1") -> str:
    ts = f"1700000000.{number:06d}"
    return json.dumps(
        {
            "token": "legacy",
            "team_id": "T111",
            "api_app_id": "A111",
            "type": "event_callback",
            "event_id": f"Ev{number:08d}",
            "event_time": 1_700_000_000,
            "event": {
                "type": "app_mention",
                "user": "U42",
                "user_profile": {"display_name": "Alice"},
                "text": f"<@{BOT_USER_ID}> benchmark message {number}",
                "ts": ts,
                "channel": channel,
                "event_ts": ts,
            },
        }
    )


def signed(body: str) -> dict[str, str]:
    stamp = str(int(time.time()))
    signature = SignatureVerifier(SECRET).generate_signature(timestamp=stamp, body=body)
    assert signature is not None
    return {
        "Content-Type": "application/json",
        "X-Slack-Request-Timestamp": stamp,
        "X-Slack-Signature": signature,
    }


def lua_pool(count: int, port: int, first: int = 0) -> str:
    entries = []
    for number in range(first, first + count):
        body = mention_body(number)
        headers = signed(body)
        head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        raw = (
            f"POST /slack/events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{head}"
            f"Content-Length: {len(body.encode())}\r\n\r\n{body}"
        )
        entries.append(json.dumps(raw))  # a JSON string is a valid Lua string literal here
    counts = json.dumps(str(Path(__file__).resolve().parent / "counts.lua"))
    return LUA_TEMPLATE.replace("{COUNTS}", counts).replace(
        "{POOL}", "{" + ",\n".join(entries) + "}"
    )


class FakeSlack:
    """The fake Web API on its own event loop thread (the server calls it during the load)."""

    def __init__(self) -> None:
        self.api: SlackApi | None = None
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def start(self) -> SlackApi:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(), self._loop)
        self._ready.wait(10)
        assert self.api is not None
        return self.api

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        async with SlackApi.running() as api:
            self.api = api
            self._ready.set()
            await self._stop.wait()

    def posted_threads(self) -> set[str]:
        assert self.api is not None
        return {str(call.args.get("thread_ts")) for call in list(self.api.posts)}

    def stop(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)


def slack_env(api_url: str) -> dict[str, str]:
    return {
        "SWITCHBOARD_SLACK__SIGNING_SECRET": SECRET,
        "SWITCHBOARD_SLACK__BOT_TOKEN": "xoxb-bench",
        "SWITCHBOARD_SLACK__API_URL": api_url,
        "SWITCHBOARD_SLACK__WORKFLOW": "echo",
        "SWITCHBOARD_RUNTIME__REGISTER_EXAMPLES": "false",
    }


def start_profile(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes]:
    """py-spy (``.venv/bin/pip install py-spy``) sampling the server for the whole load."""
    py_spy = Path(sys.executable).parent / "py-spy"
    if not py_spy.is_file():
        raise bench.BenchError("--profile needs py-spy: .venv/bin/pip install py-spy")
    return subprocess.Popen(
        [
            str(py_spy),
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(int(seconds)),
            "--rate",
            "200",
            "--format",
            "raw",
            "--output",
            str(out),
            "--nonblocking",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def measure_intake(
    api_url: str,
    work: Path,
    seconds: float,
    connections: int,
    profile: Path | None,
    database_kind: str,
) -> str:
    with contextlib.ExitStack() as stack:
        database = bench.bench_database(database_kind, stack, work, "intake")
        return _measure_intake(api_url, work, seconds, connections, profile, database)


def _measure_intake(
    api_url: str,
    work: Path,
    seconds: float,
    connections: int,
    profile: Path | None,
    database: bench.Database,
) -> str:
    server = bench.Server(
        database, {**bench.clean_environ(), **slack_env(api_url)}, "web", work / "intake.log"
    )
    server.start()
    try:
        # Warm-up (its own events): the database pool's connections and SQLAlchemy's caches are
        # made here, not in the measured run (on PostgreSQL they were a 400 ms first-second tail).
        warmup = work / "warmup.lua"
        warmup.write_text(lua_pool(3000, server.port, first=10_000_000))
        bench.run_wrk_script(
            warmup, f"{server.url}/slack/events", 10, 2, 2, env=bench.clean_environ()
        )
        warmed = database.settled_count()
        pool = max(2000, int(seconds * 6000))
        script = work / "slack.lua"
        script.write_text(lua_pool(pool, server.port))
        recorder = None
        # wrk parses the whole pool before it sends (the server idles meanwhile): CPU per event
        # is the server's CPU time over the run divided by the events it acknowledged.
        load = os.getloadavg()[0]
        cpu_before = bench.process_seconds(server.pid)
        if profile is not None:
            recorder = start_profile(server.pid, seconds + 60, profile)
        result = bench.run_wrk_script(
            script,
            f"{server.url}/slack/events",
            connections,
            2,
            seconds,
            env=bench.clean_environ(),
            startup=120,  # every wrk thread parses the whole pool before it sends
        )
        cpu = bench.process_seconds(server.pid) - cpu_before
        if recorder is not None:
            recorder.send_signal(signal.SIGINT)  # py-spy writes its profile on Ctrl-C
            recorder.wait(30)
        stored = database.settled_count() - warmed
        distinct = min(result.ok, pool)
    finally:
        server.stop()
    per_event = 1000 * cpu / max(1, result.ok)
    return (
        f"| {database.kind} | {connections} | {result.rps:,.0f} | {bench.fmt_ms(result.p50_ms)} | "
        f"{bench.fmt_ms(result.p99_ms)} | {per_event:.3f} | {result.ok:,} | {result.non2xx} | "
        f"{stored:,} (distinct events acked ≥ {distinct:,}; pool {pool:,}) | {load:.2f} |"
    )


def measure_replies(fake: FakeSlack, api_url: str, work: Path, count: int) -> str:
    database = bench.Database(kind="sqlite", data_dir=work / "e2e")
    env = {
        **bench.clean_environ(),
        **slack_env(api_url),
        "SWITCHBOARD_SLACK__CHANNEL_INTERVAL": "0",
    }
    server = bench.Server(database, env, "web,worker", work / "e2e.log")
    server.start()
    samples: list[float] = []
    try:
        with httpx.Client(timeout=10) as http:
            for number in range(count + 3):  # three warm-up mentions
                body = mention_body(900_000 + number, channel="CLAT")
                thread = json.loads(body)["event"]["ts"]
                started = time.perf_counter()
                http.post(
                    f"{server.url}/slack/events", content=body, headers=signed(body)
                ).raise_for_status()
                deadline = time.monotonic() + 10
                while thread not in fake.posted_threads():
                    if time.monotonic() > deadline:
                        raise bench.BenchError(f"no reply to mention {number}")
                    time.sleep(0.0005)
                if number >= 3:
                    samples.append((time.perf_counter() - started) * 1000)
    finally:
        server.stop()
    return (
        f"| {len(samples)} | {bench.fmt_ms(bench.percentile(samples, 50))} | "
        f"{bench.fmt_ms(bench.percentile(samples, 99))} | {bench.fmt_ms(max(samples))} |"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--replies", type=int, default=30)
    parser.add_argument(
        "--profile", type=Path, help="record a py-spy profile of the intake run (collapsed stacks)"
    )
    parser.add_argument("--database", choices=("sqlite", "postgres"), default="sqlite")
    args = parser.parse_args()
    fake = FakeSlack()
    api = fake.start()
    try:
        with tempfile.TemporaryDirectory(prefix="sb-slack-bench-") as tmp:
            work = Path(tmp)
            intake = measure_intake(
                api.api_url, work, args.duration, args.connections, args.profile, args.database
            )
            replies = measure_replies(fake, api.api_url, work, args.replies) if args.replies else ""
    finally:
        fake.stop()
    print(
        "| database | connections | events/s | ack p50 | ack p99 | server CPU ms/event | 2xx "
        "| non-2xx | runs stored | load avg |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    print(intake)
    print()
    print("| mentions | reply p50 | reply p99 | max |")
    print("|---|---|---|---|")
    print(replies)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
