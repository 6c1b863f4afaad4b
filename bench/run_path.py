"""The run path as a caller sees it: sync latency, its stages, throughput and fairness.

Usage (from the repository root)::

    .venv/bin/python bench/run_path.py [--backends sqlite,postgres] [--echo 300] [--burst 10]

For each backend, on a fresh data dir (SQLite ``synchronous=FULL``, or a throwaway PostgreSQL,
tests/pgserver.py) and a default single node (``switchboard serve``, all roles):

1. References measured in the same run, so that a busy machine moves them together: a raw SQLite
   commit (insert + ``COMMIT``, WAL, ``synchronous=FULL``) in the data dir's file system, and a
   loopback HTTP round trip to a bare aiohttp handler (httpx, keep-alive).
2. ``--echo`` sequential ``POST /run/echo/`` with httpx: p50/p99 of what the caller waits for, and
   the stages underneath from the server's run-path trace (core/tracing.py, switched on in the
   server process only by this script): intake queued → committed → claimed → executed →
   completed → waiter woken → answered.
3. A ``--burst`` s burst of ``POST /run_async/echo/`` at ``--connections`` while a schedule of
   another owner fires every second (built-in ``echo``, webhook target on a loopback receiver):
   accepted/s, completed/s during the burst and overall (the drain), and the tick → delivered lag
   of every tick scheduled while the burst ran.

Prints a table; with ``--write`` replaces the section "Run path" of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
SECTION = "## Run path"


def percentile(samples: list[float], pct: float) -> float:
    if not samples:
        return math.nan
    ordered = sorted(samples)
    return ordered[max(1, math.ceil(pct / 100 * len(ordered))) - 1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def log(message: str) -> None:
    print(f"[run-path {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---- the traced server (a child process) ---------------------------------------------------


def serve_traced(trace_path: Path, argv: list[str]) -> int:
    """``switchboard serve`` with the run-path trace on; the marks are written at exit."""
    sys.path.insert(0, str(REPO))
    from core.tracing import TRACE
    from switchboard.cli import main

    TRACE.enable()
    try:
        return main(["serve", *argv])
    finally:
        trace_path.write_text(json.dumps(TRACE.marks()))


# ---- references ----------------------------------------------------------------------------


def sqlite_commit_ms(directory: Path, count: int = 200) -> float:
    """p50 of one small insert + COMMIT in WAL mode with synchronous=FULL."""
    path = directory / "reference.db"
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=FULL")
        connection.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        samples = []
        for n in range(count):
            started = time.perf_counter()
            connection.execute("BEGIN IMMEDIATE")
            connection.execute("INSERT INTO t (v) VALUES (?)", (str(n),))
            connection.execute("COMMIT")
            samples.append((time.perf_counter() - started) * 1000)
    finally:
        connection.close()
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                Path(f"{path}{suffix}").unlink()
    return percentile(samples, 50)


BARE_SERVER = """
import sys
from aiohttp import web
async def ok(request):
    await request.read()
    return web.json_response({"ok": True})
app = web.Application()
app.router.add_post("/", ok)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""


def loopback_ms(count: int = 300) -> float:
    """p50 of a POST to a bare aiohttp handler in another process (httpx, keep-alive)."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-c", BARE_SERVER, str(port)])
    try:
        with httpx.Client(base_url=f"http://{HOST}:{port}", timeout=5.0) as client:
            deadline = time.monotonic() + 30
            while True:
                try:
                    client.post("/", json={})
                    break
                except httpx.HTTPError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            samples = []
            for n in range(count):
                started = time.perf_counter()
                client.post("/", json={"n": n}).raise_for_status()
                samples.append((time.perf_counter() - started) * 1000)
    finally:
        process.terminate()
        process.wait(10)
    return percentile(samples, 50)


# ---- one backend ---------------------------------------------------------------------------


@dataclass
class Result:
    backend: str
    sqlite_commit: float = math.nan
    loopback: float = math.nan
    echo: list[float] = field(default_factory=list)
    stages: dict[str, float] = field(default_factory=dict)
    accepted: int = 0
    burst_seconds: float = 0.0
    completed_in_burst: int = 0
    drain_seconds: float = 0.0
    ticks: list[float] = field(default_factory=list)
    burst_window: tuple[float, float] = (0.0, 0.0)
    backlog: int = 0
    backlog_seconds: float = math.nan
    errors: int = 0

    @property
    def drain_rate(self) -> float:
        left = self.accepted - self.completed_in_burst
        return left / max(self.drain_seconds - self.burst_seconds, 1e-9)


class Node:
    """A traced single node on a fresh data dir; a webhook receiver for the schedule's ticks."""

    def __init__(
        self, work: Path, database_url: str | None, tick_url: str, runtime: list[str]
    ) -> None:
        self.work = work
        self.data_dir = work / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.trace_path = work / "trace.json"
        self.port = free_port()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
        self.env["SWITCHBOARD_SERVER__DATA_DIR"] = str(self.data_dir)
        if database_url is not None:
            self.env["SWITCHBOARD_SERVER__DATABASE_URL"] = database_url
        config = work / "switchboard.toml"
        config.write_text(
            "[runtime]\nregister_examples = false\n"
            + "".join(f"{setting}\n" for setting in runtime)
            + '[delivery]\nallow_hosts = ["127.0.0.1"]\n'
            '[scheduler]\nowner = "ticks"\n'
            "[[schedules]]\n"
            'id = "every-second"\nservice_id = "echo"\ncron = "* * * * * *"\n'
            f'deliver_to = "webhook:{tick_url}"\n'
        )
        self.config = config
        self.runtime = runtime
        self.tick_url = tick_url
        self.workers = True
        self.process: subprocess.Popen[bytes] | None = None
        self.key = ""

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def cli(self, *args: str) -> str:
        result = subprocess.run(
            [str(Path(sys.executable).parent / "switchboard"), *args, "--config", str(self.config)],
            cwd=REPO,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"switchboard {args}: {result.stderr[-2000:]}")
        return result.stdout

    def start(self) -> None:
        text = self.config.read_text()
        if not self.workers:
            text = text.replace("[runtime]\n", "[runtime]\nworkers = 0\n", 1)
        else:
            text = text.replace("[runtime]\nworkers = 0\n", "[runtime]\n")
        self.config.write_text(text)
        self.cli("db", "upgrade")
        self.key = self.cli("keys", "create", "--name", "bench").strip().splitlines()[-1].strip()
        with open(self.work / "server.log", "ab") as output:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    __file__,
                    "--serve-traced",
                    str(self.trace_path),
                    "--config",
                    str(self.config),
                    "--host",
                    HOST,
                    "--port",
                    str(self.port),
                ],
                cwd=REPO,
                env=self.env,
                stdout=output,
                stderr=output,
                start_new_session=True,
            )
        deadline = time.monotonic() + 60
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"server exited; see {self.work / 'server.log'}")
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(f"{self.url}/healthz").status_code == 200:
                        return
                time.sleep(0.1)
        raise RuntimeError("server did not become healthy")

    def stop(self) -> dict[str, dict[str, int]]:
        if self.process is None:
            return {}
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        self.process = None
        if not self.trace_path.exists():
            return {}
        marks: dict[str, dict[str, int]] = json.loads(self.trace_path.read_text())
        return marks


def stage_breakdown(marks: dict[str, dict[str, int]], run_ids: list[str]) -> dict[str, float]:
    """p50 of each step between consecutive stages, in the order the stages happened (a run
    claimed in its intake transaction is claimed before that transaction commits)."""
    steps: dict[str, list[float]] = {}
    for run_id in run_ids:
        stages = sorted(marks.get(run_id, {}).items(), key=lambda item: item[1])
        for (first, at), (then, later) in itertools.pairwise(stages):
            steps.setdefault(f"{first} → {then}", []).append((later - at) / 1e6)
    common = max((len(samples) for samples in steps.values()), default=0)
    return {
        step: percentile(samples, 50)
        for step, samples in steps.items()
        if len(samples) >= common / 2
    }


async def echo_sequential(node: Node, count: int, result: Result) -> list[str]:
    headers = {"Authorization": f"Bearer {node.key}"}
    run_ids = []
    async with httpx.AsyncClient(base_url=node.url, headers=headers, timeout=30) as client:
        for n in range(count + 20):
            started = time.perf_counter()
            response = await client.post("/run/echo/", json={"n": n})
            elapsed = (time.perf_counter() - started) * 1000
            if response.status_code != 200 or response.json() != {"n": n}:
                result.errors += 1
                continue
            if n >= 20:  # warm-up first
                result.echo.append(elapsed)
                run_ids.append(response.headers["X-Request-Id"])
    return run_ids


async def burst(
    node: Node,
    seconds: float,
    connections: int,
    ticks: dict[str, tuple[float, float]],
    result: Result,
) -> None:
    headers = {"Authorization": f"Bearer {node.key}"}
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    ticks.clear()
    async with httpx.AsyncClient(
        base_url=node.url, headers=headers, timeout=30, limits=limits
    ) as client:
        started = time.monotonic()
        end = started + seconds
        accepted: list[str] = []

        async def caller() -> None:
            while time.monotonic() < end:
                try:
                    response = await client.post("/run_async/echo/", json={"n": 1})
                except httpx.HTTPError:
                    result.errors += 1
                    continue
                if response.status_code == 200:
                    accepted.append(response.json()["request_id"])
                else:
                    result.errors += 1

        await asyncio.gather(*(caller() for _ in range(connections)))
        result.burst_seconds = time.monotonic() - started
        result.accepted = len(accepted)
        # Completed during the burst: read back each run's completion time afterwards.
        burst_end_wall = time.time()
        deadline = time.monotonic() + 300
        last = accepted[-1] if accepted else None
        while last is not None and time.monotonic() < deadline:
            detail = (await client.get(f"/request/{last}")).json()
            if detail.get("status") in ("completed", "failed", "timed_out"):
                break
            await asyncio.sleep(0.2)
        result.drain_seconds = time.monotonic() - started
        sample = accepted[:: max(1, len(accepted) // 400)]
        done_in_burst = 0
        for run_id in sample:
            detail = (await client.get(f"/request/{run_id}")).json()
            completed_at = detail.get("completedAt") or detail.get("completed_at")
            if completed_at and _wall(completed_at) <= burst_end_wall:
                done_in_burst += 1
        result.completed_in_burst = round(done_in_burst * len(accepted) / max(1, len(sample)))
        result.burst_window = (burst_end_wall - result.burst_seconds, burst_end_wall)


async def backlog(node: Node, count: int, connections: int, result: Result) -> None:
    """Queue ``count`` runs on a node without workers, restart it with its workers, and time
    the drain from the server's own stamps: first started_at to last completed_at."""
    headers = {"Authorization": f"Bearer {node.key}"}
    ids: list[str] = []
    async with httpx.AsyncClient(base_url=node.url, headers=headers, timeout=30) as client:

        async def caller(share: int) -> None:
            for _ in range(share):
                response = await client.post("/run_async/echo/", json={"n": 1})
                if response.status_code == 200:
                    ids.append(response.json()["request_id"])
                else:
                    result.errors += 1

        await asyncio.gather(*(caller(count // connections) for _ in range(connections)))
    node.stop()
    node.workers = True
    node.start()
    headers = {"Authorization": f"Bearer {node.key}"}
    async with httpx.AsyncClient(base_url=node.url, headers=headers, timeout=30) as client:
        ids.sort()
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            details = [(await client.get(f"/request/{run_id}")).json() for run_id in ids[-20:]]
            if all(d.get("completedAt") for d in details):
                break
            await asyncio.sleep(0.5)
        first = (await client.get(f"/request/{ids[0]}")).json()
        starts = [_wall(first["startedAt"])]
        ends = [_wall(d["completedAt"]) for d in details if d.get("completedAt")]
        result.backlog = len(ids)
        result.backlog_seconds = max(ends) - min(starts) if ends else math.nan


def _wall(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


async def measure(backend: str, args: argparse.Namespace, work: Path) -> Result:
    from aiohttp import web

    result = Result(backend)
    result.sqlite_commit = sqlite_commit_ms(work)
    result.loopback = loopback_ms()
    log(
        f"{backend}: SQLite commit {result.sqlite_commit:.2f} ms, loopback {result.loopback:.2f} ms"
    )
    arrivals: dict[str, tuple[float, float]] = {}  # run id: (created, delivered), wall clock

    async def hook(request: web.Request) -> web.Response:
        body = await request.json()
        record = body.get("record") or body
        created = record.get("createdAt") or record.get("created_at")
        if created:
            run_id = str(record.get("id") or record.get("request_id"))
            arrivals[run_id] = (_wall(created), time.time())
        return web.json_response({})

    receiver = web.Application()
    receiver.router.add_post("/hook", hook)
    runner = web.AppRunner(receiver, access_log=None)
    await runner.setup()
    hook_port = free_port()
    await web.TCPSite(runner, HOST, hook_port).start()
    database_url = None
    marks: dict[str, dict[str, int]] = {}
    stack = contextlib.ExitStack()
    if backend == "postgres":
        sys.path.insert(0, str(REPO))
        from tests.pgserver import ThrowawayPostgres

        pg = stack.enter_context(ThrowawayPostgres())
        pg.create_database("runpath")
        database_url = pg.url("runpath")
    node = Node(work / backend, database_url, f"http://{HOST}:{hook_port}/hook", args.runtime)
    try:
        node.start()
        log(f"{backend}: {args.echo} sequential POST /run/echo/")
        run_ids = await echo_sequential(node, args.echo, result)
        await asyncio.sleep(1.5)  # let the schedule's first deliveries settle
        arrivals.clear()
        log(
            f"{backend}: {args.burst} s burst of /run_async/echo/ at {args.connections} connections"
        )
        await burst(node, args.burst, args.connections, arrivals, result)
        low, high = result.burst_window
        result.ticks = [done - made for made, done in arrivals.values() if low <= made <= high]
        marks = node.stop()
        if args.backlog:
            log(f"{backend}: a backlog of {args.backlog} runs, then the node's workers drain it")
            node.workers = False
            node.start()
            await backlog(node, args.backlog, args.connections, result)
    finally:
        final = node.stop()
        marks = marks or final
        stack.close()
        await runner.cleanup()
    result.stages = stage_breakdown(marks, run_ids)
    return result


def render(results: list[Result], command: str) -> str:
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [SECTION, "", f"Command: `{command}` ({stamp})", ""]
    for r in results:
        burst = max(r.burst_seconds, 1e-9)
        rows: list[tuple[str, str]] = [
            ("reference: raw SQLite commit p50 (synchronous=FULL)", f"{r.sqlite_commit:.2f} ms"),
            ("reference: loopback HTTP round trip p50", f"{r.loopback:.2f} ms"),
            (
                f"`POST /run/echo/` p50 ({len(r.echo)} sequential)",
                f"{percentile(r.echo, 50):.2f} ms",
            ),
            ("`POST /run/echo/` p99", f"{percentile(r.echo, 99):.2f} ms"),
            *((f"stage p50: {label}", f"{value:.2f} ms") for label, value in r.stages.items()),
            ("burst: accepted/s (`/run_async/echo/`)", f"{r.accepted / burst:.0f}"),
            ("burst: completed/s during the burst", f"{r.completed_in_burst / burst:.0f}"),
            (
                f"burst: completed/s overall (accept + drain, {r.drain_seconds:.1f} s)",
                f"{r.accepted / max(r.drain_seconds, 1e-9):.0f}",
            ),
            ("drain: completed/s after the burst (no intake competing)", f"{r.drain_rate:.0f}"),
            (
                f"backlog of {r.backlog} queued, node restarted with workers: completed/s",
                f"{r.backlog / r.backlog_seconds:.0f}",
            ),
            ("ticks created during the burst and delivered", f"{len(r.ticks)}"),
            (
                "tick → delivered p50 / p99",
                f"{percentile(r.ticks, 50) * 1000:.0f} / {percentile(r.ticks, 99) * 1000:.0f} ms",
            ),
            ("errors", f"{r.errors}"),
        ]
        lines += [f"### {r.backend}", "", "| what | value |", "|---|--:|"]
        lines += [f"| {what} | {value} |" for what, value in rows]
        lines.append("")
    return "\n".join(lines)


def write_section(text: str) -> None:
    path = REPO / "bench" / "RESULTS.md"
    current = path.read_text() if path.exists() else ""
    start = current.find(SECTION + "\n")
    if start >= 0:
        end = current.find("\n## ", start + len(SECTION))
        current = current[:start] + current[end + 1 :] if end >= 0 else current[:start]
    path.write_text(current.rstrip("\n") + "\n\n" + text + "\n")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--serve-traced"]:
        return serve_traced(Path(argv[1]), argv[2:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="sqlite")
    parser.add_argument("--echo", type=int, default=300)
    parser.add_argument("--burst", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=20)
    parser.add_argument("--backlog", type=int, default=3000, help="0: skip the drain phase")
    parser.add_argument(
        "--runtime",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a [runtime] setting for the node (TOML), e.g. per_workflow_limit=16",
    )
    parser.add_argument("--write", action="store_true", help="replace the section in RESULTS.md")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="run-path-") as tmp:
        results = [
            asyncio.run(measure(backend, args, Path(tmp))) for backend in args.backends.split(",")
        ]
    text = render(results, "python bench/run_path.py " + " ".join(argv))
    print(text)
    if args.write:
        write_section(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
