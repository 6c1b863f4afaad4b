"""Switchboard throughput and latency benchmark.

Usage (from the repository root)::

    .venv/bin/python bench/run.py [--quick] [--backends sqlite,postgres] [--duration 10]

For each backend it measures two things on a fresh data dir and database:

1. Intake: ``switchboard serve --role web`` (the API only; no worker competes for the CPUs)
   loaded with ``wrk`` POSTing ``{"n": 1}`` to ``/run_async/echo/`` at 1, 10 and 50
   connections. Afterwards the ``runs`` table is counted directly and must hold exactly the
   runs wrk saw accepted (2xx) plus those still in flight when wrk stopped its clock.
2. End to end: ``switchboard serve`` (web and worker) on another fresh database; sequential
   ``POST /run/echo/`` (built-in service) and ``POST /run/hello/`` (examples/hello.py, a script
   workflow that starts a fresh process per run), timed with httpx.

Results go to ``bench/RESULTS.md`` (overwritten; ``--output`` to change) and to stdout. All
traffic is to 127.0.0.1. The API key reaches wrk through the environment, never argv.
Exit status: 0 when every check passed, 1 when a check failed, 2 on a setup error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import math
import os
import platform
import re
import resource
import shlex
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
LUA_SCRIPT = BENCH / "post.lua"
HELLO = REPO / "examples" / "hello.py"
HOST = "127.0.0.1"
KEY_ENV = "SWITCHBOARD_BENCH_KEY"

LEVELS = ((1, 1), (10, 2), (50, 2))  # (connections, wrk threads)
TARGET_RPS = 5000.0
TARGET_P99_MS = 20.0


class BenchError(RuntimeError):
    """The benchmark could not be set up or run."""


# ---- small helpers -------------------------------------------------------------------------


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def switchboard_bin() -> Path:
    for candidate in (
        Path(sys.executable).parent / "switchboard",
        REPO / ".venv" / "bin" / "switchboard",
    ):
        if candidate.is_file():
            return candidate
    raise BenchError(
        "the switchboard console script was not found next to this Python or in .venv/bin"
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def clean_environ() -> dict[str, str]:
    """This process's environment without inherited Switchboard settings or the bench key."""
    return {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}


def percentile(samples: list[float], pct: float) -> float:
    """Nearest-rank percentile (for N=30, p99 is the maximum)."""
    if not samples:
        return math.nan
    ordered = sorted(samples)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def fmt_ms(value: float) -> str:
    if math.isnan(value):
        return "-"
    return f"{value:.2f}" if value < 100 else f"{value:.0f}"


# ---- one backend's database ----------------------------------------------------------------


@dataclass
class Database:
    """Where a server keeps its runs, and a way to count them from outside the server."""

    kind: str  # "sqlite" | "postgres"
    data_dir: Path
    url: str | None = None  # SQLAlchemy URL for the server (None: SQLite in data_dir)
    dsn: str | None = None  # asyncpg DSN for counting (postgres)
    port: int = 0  # PostgreSQL's port, to find its processes for CPU accounting

    def server_pids(self) -> list[int]:
        return postgres_pids(self.port) if self.kind == "postgres" else []

    def settings_env(self) -> dict[str, str]:
        env = {"SWITCHBOARD_SERVER__DATA_DIR": str(self.data_dir)}
        if self.url is not None:
            env["SWITCHBOARD_SERVER__DATABASE_URL"] = self.url
        return env

    def count_runs(self) -> int:
        if self.kind == "sqlite":
            path = self.data_dir / "switchboard.db"
            # Read-only, outside the server; WAL readers do not block the writer.
            with contextlib.closing(
                sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
            ) as db:
                (count,) = db.execute("select count(*) from runs").fetchone()
                return int(count)
        return asyncio.run(self._count_postgres())

    async def _count_postgres(self) -> int:
        import asyncpg

        connection = await asyncpg.connect(self.dsn, timeout=10)
        try:
            return int(await connection.fetchval("select count(*) from runs"))
        finally:
            await connection.close()

    def settled_count(self, timeout: float = 30.0, quiet: float = 2.0) -> int:
        """The run count once it stopped changing for ``quiet`` seconds (bounded by ``timeout``)."""
        deadline = time.monotonic() + timeout
        last = self.count_runs()
        stable_since = time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.1)
            now = self.count_runs()
            if now != last:
                last, stable_since = now, time.monotonic()
            elif time.monotonic() - stable_since >= quiet:
                return now
        return last


def bench_database(kind: str, stack: contextlib.ExitStack, work: Path, name: str) -> Database:
    """A fresh database of ``kind`` for one server: SQLite in ``work/name``, or a database
    ``name`` on a throwaway PostgreSQL (tests/pgserver.py, fsync off) that ``stack`` stops."""
    data_dir = work / name
    data_dir.mkdir(parents=True, exist_ok=True)
    if kind == "sqlite":
        return Database("sqlite", data_dir)
    if kind != "postgres":
        raise BenchError(f"unknown database {kind!r} (sqlite or postgres)")
    sys.path.insert(0, str(REPO))
    from tests.pgserver import ThrowawayPostgres

    pg = stack.enter_context(ThrowawayPostgres())
    pg.create_database(name)
    return Database("postgres", data_dir, pg.url(name), pg.dsn(name), pg.port)


# ---- the server process --------------------------------------------------------------------


class Server:
    """``switchboard serve`` in a child process on a free loopback port; output to a log file."""

    def __init__(
        self, database: Database, base_env: dict[str, str], roles: str, log_path: Path
    ) -> None:
        self.database = database
        self.base_env = base_env
        self.roles = roles
        self.log_path = log_path
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.stop_seconds = math.nan
        self.clean_stop = True

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self, timeout: float = 60.0, attempts: int = 3) -> None:
        for attempt in range(1, attempts + 1):
            self.port = free_port()
            env = {
                **self.base_env,
                **self.database.settings_env(),
                "SWITCHBOARD_SERVER__PORT": str(self.port),
            }
            cmd = [
                str(switchboard_bin()),
                "serve",
                "--role",
                self.roles,
                "--host",
                HOST,
                "--port",
                str(self.port),
            ]
            with open(self.log_path, "ab") as log_file:
                log_file.write(f"\n--- {' '.join(cmd)} (attempt {attempt})\n".encode())
                log_file.flush()
                self.process = subprocess.Popen(
                    cmd,
                    cwd=REPO,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=log_file,
                    start_new_session=True,
                )
            if self._wait_healthy(timeout):
                log(f"server up on {self.url} (roles {self.roles}, pid {self.process.pid})")
                return
            self.stop()
        raise BenchError(f"server did not become healthy; see {self.log_path}")

    def _wait_healthy(self, timeout: float) -> bool:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    return False
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(f"{self.url}/healthz").status_code == 200:
                        return True
                time.sleep(0.1)
        return False

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def check_alive(self) -> None:
        """Raise with the exit status and the end of the server's log if it has exited."""
        if self.process is None or self.process.poll() is None:
            return
        tail = ""
        with contextlib.suppress(OSError):
            lines = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
            tail = "\n".join(lines[-15:])
        raise BenchError(
            f"the server (roles {self.roles}) exited with status {self.process.returncode}; "
            f"end of its log:\n{tail}"
        )

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM, wait up to ``timeout`` s, SIGKILL only if it did not stop by then."""
        if self.process is None or self.process.poll() is not None:
            return
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
            self.clean_stop = self.process.returncode == 0
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
            self.clean_stop = False
        self.stop_seconds = time.monotonic() - started
        state = "cleanly" if self.clean_stop else f"NOT cleanly (exit {self.process.returncode})"
        log(f"server stopped {state} in {self.stop_seconds:.1f} s")


def cli(database: Database, base_env: dict[str, str], *args: str, timeout: float = 300.0) -> str:
    """Run a ``switchboard`` command against ``database``; return its stdout (never echoed)."""
    env = {**base_env, **database.settings_env()}
    result = subprocess.run(
        [str(switchboard_bin()), *args],
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise BenchError(
            f"switchboard {args[0]} {args[1]} failed ({result.returncode}): {result.stderr[-2000:]}"
        )
    return result.stdout


def create_key(database: Database, base_env: dict[str, str]) -> str:
    stdout = cli(database, base_env, "keys", "create", "--name", "bench", timeout=120)
    lines = [line.strip() for line in stdout.splitlines() if line.strip()]
    if not lines:
        raise BenchError("switchboard keys create printed nothing")
    return lines[-1]


# ---- CPU accounting ------------------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def _machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies over all CPUs since boot, from /proc/stat."""
    fields = _proc_stat()
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def _proc_stat() -> list[int]:
    """/proc/stat's first line: user nice system idle iowait irq softirq steal ... (jiffies)."""
    return [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]


def process_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads)."""
    with contextlib.suppress(OSError, IndexError, ValueError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICK
    return math.nan


@dataclass
class CpuUse:
    """CPU used during a measurement, in % of one CPU (200% = both CPUs of a 2-CPU machine)."""

    server: float = math.nan
    load_generator: float = math.nan
    database: float = 0.0  # the PostgreSQL server's processes; SQLite runs inside the server
    machine: float = math.nan
    steal: float = math.nan  # time the hypervisor gave our virtual CPUs to someone else
    iowait: float = math.nan  # idle time with disk I/O outstanding

    @property
    def other(self) -> float:
        """Everything else: other processes, the kernel's own work."""
        steal = 0.0 if math.isnan(self.steal) else self.steal
        return self.machine - self.server - self.load_generator - self.database - steal


class CpuMeter:
    """Measures the server's, the load generator's (our children) and the machine's CPU use."""

    def __init__(self, server_pid: int, database_pids: Callable[[], list[int]]) -> None:
        self.server_pid = server_pid
        self.database_pids = database_pids

    def _database_seconds(self) -> dict[int, float]:
        return {pid: process_seconds(pid) for pid in self.database_pids()}

    def __enter__(self) -> CpuMeter:
        self._wall = time.monotonic()
        self._server = process_seconds(self.server_pid)
        self._database = self._database_seconds()
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        self._children = children.ru_utime + children.ru_stime
        self._machine = _machine_ticks()
        self._stat = _proc_stat()
        self.use = CpuUse()
        return self

    def __exit__(self, *exc: object) -> None:
        wall = time.monotonic() - self._wall
        if wall <= 0:
            return
        busy, total = _machine_ticks()
        cpus = os.cpu_count() or 1
        share = (busy - self._machine[0]) / max(1, total - self._machine[1])
        stat = [now - then for now, then in zip(_proc_stat(), self._stat, strict=False)]
        jiffies = max(1, sum(stat))
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        database = self._database_seconds()
        # Processes that started during the measurement count from zero; ended ones are lost.
        database_used = sum(
            used - self._database.get(pid, 0.0)
            for pid, used in database.items()
            if not math.isnan(used)
        )
        self.use = CpuUse(
            server=100 * (process_seconds(self.server_pid) - self._server) / wall,
            load_generator=100 * (children.ru_utime + children.ru_stime - self._children) / wall,
            database=100 * database_used / wall,
            machine=100 * share * cpus,
            steal=100 * cpus * stat[7] / jiffies if len(stat) > 7 else math.nan,
            iowait=100 * cpus * stat[4] / jiffies,
        )


def postgres_pids(port: int) -> list[int]:
    """The postmaster listening on ``port`` (found by its command line) and its children."""
    postmaster = None
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            pid = int(entry.name)
            parents[pid] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            if argv[0].endswith(b"/postgres") and f"port={port}".encode() in argv:
                postmaster = pid
    if postmaster is None:
        return []
    return [postmaster, *(pid for pid, parent in parents.items() if parent == postmaster)]


def machine_busy(seconds: float = 2.0) -> float:
    """% of one CPU the whole machine used over ``seconds`` (before we start anything)."""
    before = _machine_ticks()
    time.sleep(seconds)
    after = _machine_ticks()
    return 100 * (os.cpu_count() or 1) * (after[0] - before[0]) / max(1, after[1] - before[1])


def wait_until_idle(limit: float) -> float:
    """Wait up to ``limit`` s for a quiet machine; return the last busy figure (% of one CPU)."""
    deadline = time.monotonic() + limit
    busy = machine_busy(2.0)
    while busy > 15 and time.monotonic() < deadline:
        log(f"machine busy ({busy:.0f}% of one CPU); waiting for it to be idle")
        time.sleep(3)
        busy = machine_busy(2.0)
    return busy


# ---- wrk -----------------------------------------------------------------------------------

_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


def _duration_ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if not match:
        raise BenchError(f"unparsable wrk duration {text!r}")
    return float(match.group(1)) * _UNITS_MS[match.group(2)]


@dataclass
class WrkResult:
    connections: int
    threads: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    completed: int
    sent: int
    ok: int
    non2xx: int
    socket_errors: dict[str, int]
    stored: int = -1
    raw: str = ""
    cpu: CpuUse = field(default_factory=CpuUse)
    attempt: int = 1
    server_cpu_seconds: float = math.nan  # the server's CPU time (all threads) over the run
    load_average: float = math.nan  # 1-minute load average when the run started

    @property
    def cpu_ms_per_ok(self) -> float:
        """Server CPU per acknowledged request: independent of how much CPU it was given."""
        return 1000 * self.server_cpu_seconds / self.ok if self.ok else math.nan

    @property
    def disturbance(self) -> float:
        """CPU taken by other processes or by the hypervisor (steal), % of one CPU."""
        steal = 0.0 if math.isnan(self.cpu.steal) else self.cpu.steal
        return max(0.0, self.cpu.other) + steal

    @property
    def in_flight(self) -> int:
        return self.sent - self.completed

    @property
    def accepted_per_s(self) -> float:
        # wrk's requests/s uses its exact run time; its "in 10.00s" text is rounded.
        return self.rps * self.ok / self.completed if self.completed else 0.0

    @property
    def errors(self) -> int:
        return sum(self.socket_errors.values())

    def check(self) -> tuple[bool, str]:
        problems = []
        if self.non2xx:
            problems.append(f"{self.non2xx} non-2xx")
        if self.errors:
            problems.append(
                "socket errors " + ", ".join(f"{k}={v}" for k, v in self.socket_errors.items() if v)
            )
        if self.stored < self.ok:
            problems.append(f"{self.ok - self.stored} acknowledged runs missing from the database")
        elif self.stored > self.ok + self.in_flight:
            problems.append(f"{self.stored - self.ok - self.in_flight} more runs stored than sent")
        if problems:
            return False, "; ".join(problems)
        unstored = self.ok + self.in_flight - self.stored
        # A request wrk never saw answered may or may not have been stored: both are correct.
        return True, "ok" if unstored == 0 else f"ok ({unstored} unanswered requests not stored)"


def parse_wrk(output: str, connections: int, threads: int) -> WrkResult:
    def need(pattern: str) -> re.Match[str]:
        match = re.search(pattern, output, re.MULTILINE)
        if not match:
            raise BenchError(f"wrk output lacks {pattern!r}:\n{output}")
        return match

    completed_match = need(r"^\s*(\d+) requests in ([\d.]+\w+),")
    summary = need(r"^SBBENCH (.*)$").group(1)
    counts = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", summary)}
    return WrkResult(
        connections=connections,
        threads=threads,
        seconds=_duration_ms(completed_match.group(2)) / 1000,
        rps=float(need(r"^Requests/sec:\s+([\d.]+)").group(1)),
        p50_ms=_duration_ms(need(r"^\s+50%\s+(\S+)").group(1)),
        p99_ms=_duration_ms(need(r"^\s+99%\s+(\S+)").group(1)),
        completed=int(completed_match.group(1)),
        # wrk calls request() once more on its first thread to check the script (it counts
        # the pipelined requests); that call sends nothing.
        sent=counts["sent"] - 1,
        ok=counts["2xx"],
        non2xx=counts["non2xx"],
        socket_errors={k: counts[k] for k in ("connect", "read", "write", "timeout")},
        raw=output,
    )


def run_wrk(url: str, key: str, connections: int, threads: int, seconds: float) -> WrkResult:
    return run_wrk_script(
        LUA_SCRIPT, url, connections, threads, seconds, env={**clean_environ(), KEY_ENV: key}
    )


def run_wrk_script(
    script: Path,
    url: str,
    connections: int,
    threads: int,
    seconds: float,
    *,
    env: dict[str, str],
    startup: float = 60,
) -> WrkResult:
    """wrk with one of our scripts (they print the SBBENCH line of bench/counts.lua).

    ``startup`` is how long, beyond ``seconds``, wrk may take to load the script and finish.
    """
    cmd = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{seconds:g}s",
        "--latency",
        "--timeout",
        "5s",
        "-s",
        str(script),
        url,
    ]
    result = subprocess.run(
        cmd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=seconds + startup,
        check=False,
    )
    if result.returncode != 0:
        raise BenchError(f"wrk failed ({result.returncode}): {result.stderr[-2000:]}")
    return parse_wrk(result.stdout, connections, threads)


# ---- end-to-end latency --------------------------------------------------------------------


@dataclass
class LatencyResult:
    name: str
    samples_ms: list[float] = field(default_factory=list)
    requested: int = 0
    failures: list[str] = field(default_factory=list)

    @property
    def p50(self) -> float:
        return percentile(self.samples_ms, 50)

    @property
    def p99(self) -> float:
        return percentile(self.samples_ms, 99)

    @property
    def mean(self) -> float:
        return sum(self.samples_ms) / len(self.samples_ms) if self.samples_ms else math.nan

    @property
    def ok(self) -> bool:
        return not self.failures and len(self.samples_ms) == self.requested


def sequential_latency(
    base_url: str,
    key: str,
    service: str,
    bodies: list[dict[str, Any]],
    expected: Any,
    warmup: int,
    budget: float,
    request_timeout: float,
) -> LatencyResult:
    """POST /run/<service>/ once per body, one at a time; record each round trip in ms."""
    result = LatencyResult(name=f"POST /run/{service}/", requested=len(bodies))
    headers = {"Authorization": f"Bearer {key}"}
    deadline = time.monotonic() + budget
    with httpx.Client(base_url=base_url, headers=headers, timeout=request_timeout) as client:
        for i in range(warmup):
            response = client.post(f"/run/{service}/", json=bodies[i % len(bodies)])
            if response.status_code != 200:
                result.failures.append(
                    f"warm-up {i}: HTTP {response.status_code} {response.text[:200]}"
                )
                return result
        for i, body in enumerate(bodies):
            if time.monotonic() > deadline:
                result.failures.append(f"time budget of {budget:.0f} s spent after {i} requests")
                break
            started = time.perf_counter()
            try:
                response = client.post(f"/run/{service}/", json=body)
            except httpx.HTTPError as exc:
                result.failures.append(f"request {i}: {type(exc).__name__}: {exc}")
                continue
            elapsed = (time.perf_counter() - started) * 1000
            want = expected(body) if callable(expected) else expected
            if response.status_code != 200 or response.json() != want:
                result.failures.append(
                    f"request {i}: HTTP {response.status_code} {response.text[:200]}"
                )
                continue
            result.samples_ms.append(elapsed)
    return result


# ---- one backend ---------------------------------------------------------------------------


@dataclass
class BackendResult:
    backend: str
    intake: list[WrkResult] = field(default_factory=list)
    latency: list[LatencyResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    stop_problems: list[str] = field(default_factory=list)


@dataclass
class Plan:
    duration: float
    warmup: float
    echo_n: int
    hello_n: int
    base_env: dict[str, str]
    work: Path
    profile_dir: Path | None
    busy_before: float = math.nan
    code: str = ""
    wait_idle: float = 0.0


def measure_backend(backend: str, plan: Plan) -> BackendResult:
    result = BackendResult(backend)
    with contextlib.ExitStack() as stack:
        if backend == "sqlite":
            intake_db = Database("sqlite", plan.work / "sqlite-intake")
            e2e_db = Database("sqlite", plan.work / "sqlite-e2e")
        elif backend == "postgres":
            sys.path.insert(0, str(REPO))
            from tests.pgserver import ThrowawayPostgres

            pg = stack.enter_context(ThrowawayPostgres())
            pg.create_database("bench_intake")
            pg.create_database("bench_e2e")
            intake_db = Database(
                "postgres",
                plan.work / "pg-intake",
                pg.url("bench_intake"),
                pg.dsn("bench_intake"),
                pg.port,
            )
            e2e_db = Database(
                "postgres", plan.work / "pg-e2e", pg.url("bench_e2e"), pg.dsn("bench_e2e"), pg.port
            )
            result.notes.append(
                "PostgreSQL: throwaway server from tests/pgserver.py on the same machine, "
                "with fsync=off, synchronous_commit=off, full_page_writes=off"
            )
        else:
            raise BenchError(f"unknown backend {backend!r}")
        for db in (intake_db, e2e_db):
            db.data_dir.mkdir(parents=True)
        try:
            measure_intake(result, intake_db, plan)
            measure_end_to_end(result, e2e_db, plan)
        except (BenchError, subprocess.SubprocessError, httpx.HTTPError, OSError) as exc:
            result.error = f"{type(exc).__name__}: {exc}"
            log(f"{backend}: {result.error}")
    return result


def measure_intake(result: BackendResult, database: Database, plan: Plan) -> None:
    key = create_key(database, plan.base_env)
    server = Server(
        database, plan.base_env, "web", plan.work / f"{result.backend}-intake-server.log"
    )
    server.start()
    try:
        url = f"{server.url}/run_async/echo/"
        log(f"{result.backend}: warm-up, wrk c=10 for {plan.warmup:g} s")
        run_wrk(url, key, 10, 2, plan.warmup)
        for connections, threads in LEVELS:
            result.intake.append(
                measure_level(
                    result.backend, database, server, url, key, plan, connections, threads
                )
            )
        if plan.profile_dir is not None:
            profile(result.backend, server, url, key, plan)
    finally:
        server.stop()
        if not server.clean_stop:
            result.stop_problems.append(
                f"intake server did not stop cleanly ({server.stop_seconds:.1f} s)"
            )


DISTURBED = 25.0  # % of one CPU taken by other processes or the hypervisor during a level


def measure_level(
    backend: str,
    database: Database,
    server: Server,
    url: str,
    key: str,
    plan: Plan,
    connections: int,
    threads: int,
) -> WrkResult:
    """One wrk level; with --wait-idle, measured again (at most twice) if others disturbed it."""
    attempts = 3 if plan.wait_idle > 0 else 1
    best: WrkResult | None = None
    for attempt in range(1, attempts + 1):
        before = database.settled_count()
        if plan.wait_idle > 0:
            wait_until_idle(plan.wait_idle)
        log(f"{backend}: wrk c={connections} t={threads} for {plan.duration:g} s")
        with CpuMeter(server.pid, database.server_pids) as meter:
            try:
                measured = run_wrk(url, key, connections, threads, plan.duration)
            except BenchError:
                server.check_alive()  # a dead server explains a failed wrk better than wrk does
                raise
        measured.cpu = meter.use
        measured.stored = database.settled_count() - before
        measured.attempt = attempt
        log(
            f"{backend}: c={connections}: {measured.rps:.0f} req/s, "
            f"p50 {measured.p50_ms:.2f} ms, p99 {measured.p99_ms:.2f} ms; 2xx {measured.ok}, "
            f"in flight {measured.in_flight}, stored {measured.stored}: {measured.check()[1]}; "
            f"CPU % of one CPU: server {measured.cpu.server:.0f}, wrk "
            f"{measured.cpu.load_generator:.0f}, db {measured.cpu.database:.0f}, "
            f"other {measured.cpu.other:.0f}, steal {measured.cpu.steal:.0f}, "
            f"iowait {measured.cpu.iowait:.0f}"
        )
        if not measured.check()[0]:
            return measured  # a failed check is reported, never retried away
        if best is None or measured.disturbance < best.disturbance:
            best = measured
        if measured.disturbance <= DISTURBED:
            break
        if attempt < attempts:
            log(f"{backend}: c={connections} disturbed by other processes; measuring again")
    assert best is not None
    return best


def profile(backend: str, server: Server, url: str, key: str, plan: Plan) -> None:
    """An extra c=50 run with py-spy attached (its figures are not reported: sampling slows it)."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).is_file():
        log("--profile: py-spy not found (.venv/bin/pip install py-spy); skipped")
        return
    assert plan.profile_dir is not None
    plan.profile_dir.mkdir(parents=True, exist_ok=True)
    seconds = max(int(plan.duration), 3)
    outputs = []
    for fmt, suffix in (("raw", "txt"), ("flamegraph", "svg")):
        out = plan.profile_dir / f"{backend}-c50.{suffix}"
        recorder = subprocess.Popen(
            [
                py_spy,
                "record",
                "--pid",
                str(server.pid),
                "--duration",
                str(seconds),
                "--rate",
                "200",
                "--format",
                fmt,
                "--output",
                str(out),
                "--threads",
                "--nonblocking",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        time.sleep(0.5)
        run_wrk(url, key, 50, 2, seconds)
        try:
            recorder.wait(seconds + 30)
        except subprocess.TimeoutExpired:
            recorder.kill()
            recorder.wait(10)
        outputs.append(str(out))
    log(f"profiles written: {', '.join(outputs)} (summarise with bench/profile_top.py)")


def measure_end_to_end(result: BackendResult, database: Database, plan: Plan) -> None:
    key = create_key(database, plan.base_env)
    log(f"{result.backend}: registering {HELLO.relative_to(REPO)}")
    cli(database, plan.base_env, "workflows", "add", str(HELLO), timeout=600)
    server = Server(
        database, plan.base_env, "web,worker", plan.work / f"{result.backend}-e2e-server.log"
    )
    server.start()
    try:
        log(f"{result.backend}: {plan.echo_n} sequential POST /run/echo/")
        result.latency.append(
            sequential_latency(
                server.url,
                key,
                "echo",
                [{"n": i} for i in range(plan.echo_n)],
                lambda body: body,
                warmup=20,
                budget=180,
                request_timeout=30,
            )
        )
        log(f"{result.backend}: {plan.hello_n} sequential POST /run/hello/")
        result.latency.append(
            sequential_latency(
                server.url,
                key,
                "hello",
                [{"name": "bench"}] * plan.hello_n,
                {"message": "Hello bench!"},
                warmup=2,
                budget=300,
                request_timeout=120,
            )
        )
        server.check_alive()
        for latency in result.latency:
            failures = "; ".join(latency.failures)
            log(
                f"{result.backend}: {latency.name}: n={len(latency.samples_ms)} "
                f"p50 {latency.p50:.1f} ms p99 {latency.p99:.1f} ms {failures}"
            )
    finally:
        server.stop()
        if not server.clean_stop:
            result.stop_problems.append(
                f"end-to-end server did not stop cleanly ({server.stop_seconds:.1f} s)"
            )


# ---- report --------------------------------------------------------------------------------


def machine_facts() -> list[tuple[str, str]]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory = "unknown"
    with contextlib.suppress(OSError, ValueError, IndexError):
        kib = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0])
        memory = f"{kib / 1024 / 1024:.1f} GiB"
    return [
        ("CPUs (`nproc`)", _command_output(["nproc"]) or str(os.cpu_count())),
        ("CPU model (/proc/cpuinfo)", model),
        ("Memory", memory),
        ("Kernel", platform.release()),
        ("Python", f"{platform.python_version()} ({sys.executable})"),
        ("SQLite library", sqlite3.sqlite_version),
        ("wrk", (_command_output(["wrk", "-v"]) or "unknown").split(" Copyright")[0]),
    ]


def code_version() -> str:
    """The commit measured, and whether files outside bench/ differed from it."""
    head = _command_output(["git", "-C", str(REPO), "rev-parse", "--short=12", "HEAD"])
    if not head:
        return "unknown (not a git checkout)"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        status = subprocess.run(
            [
                "git",
                "-C",
                str(REPO),
                "status",
                "--porcelain",
                "--untracked-files=no",
                "--",
                ".",
                ":(exclude)bench",
            ],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout.splitlines()
        if status:
            return f"git {head} plus uncommitted changes in {len(status)} files outside bench/"
    return f"git {head}"


def _command_output(cmd: list[str]) -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
        lines = (done.stdout or done.stderr).strip().splitlines()
        return lines[0].strip() if lines else ""
    return ""


def _problem(backend: str, text: str) -> str:
    """A list item; any lines after the first (a log tail) go in an indented code block."""
    first, _, rest = text.partition("\n")
    if not rest.strip():
        return f"- {backend}: {first}"
    block = "\n".join(f"  {line}" for line in ["```", *rest.splitlines(), "```"])
    return f"- {backend}: {first}\n\n{block}"


def _row(cells: Sequence[object]) -> str:
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


INTAKE_HEADER = [
    "backend",
    "conns",
    "wrk threads",
    "requests/s",
    "accepted 2xx/s",
    "p50 ms",
    "p99 ms",
    "2xx",
    "non-2xx",
    "socket errors",
    "in flight at stop",
    "stored in db",
    "check",
    "server CPU %",
    "wrk CPU %",
    "db CPU %",
    "other CPU %",
    "steal %",
    "iowait %",
]
LATENCY_HEADER = ["backend", "request", "N", "p50 ms", "p99 ms", "mean ms", "max ms", "failures"]

EXPLANATION = """\
## What each row measures

- **Intake** rows: `wrk` keeps *conns* keep-alive connections busy POSTing `{"n": 1}` (JSON, with
  the API key) to `/run_async/echo/` for the whole duration. The server runs with `--role web`
  only, so each run is accepted (key checked, body parsed, run durably queued in the database) and
  answered with its `request_id`, but not executed: no worker competes with the intake for the
  CPUs. *requests/s* is wrk's figure for all responses; *accepted 2xx/s* counts only 2xx answers;
  *p50/p99* are wrk's latency percentiles for one request on one connection. wrk runs on the same
  machine and takes CPU from the server.
- *stored in db*: how much `select count(*) from runs` grew during the level, read directly
  from the database (sqlite3 / asyncpg, not through the server) once the count had not changed
  for 2 s. The check passes when there were no non-2xx answers and no socket errors, and every
  acknowledged run is stored: 2xx ≤ stored ≤ 2xx + *in flight at stop*. *In flight at stop*
  counts requests wrk had sent but whose answers it had not read when its clock stopped (at most
  one per connection); the server still accepts and stores those, so normally stored = 2xx + in
  flight exactly.
- *server / wrk / db / other CPU %*: CPU time used during the level, in % of one CPU (the
  machine has 100% per CPU): the server process (all its threads), wrk, the PostgreSQL server's
  processes (SQLite runs inside the server process), and everything else on the machine (the
  kernel's own work, any other process). *steal*: CPU time the hypervisor gave to other guests
  while ours wanted it (this is a virtual machine); *iowait*: idle CPU time with disk I/O
  outstanding (SQLite's fsyncs). A large *other* or *steal* means the figures are disturbed; with
  `--wait-idle` such a level is measured again (at most 3 attempts, the least disturbed one is
  reported, with its attempt number in *check*).
- **End to end** rows: a second fresh database, the server with both roles (web and worker), and
  one client sending synchronous `POST /run/<service>/` requests one after another (httpx,
  keep-alive, after a few unmeasured warm-up requests) and timing each round trip: intake,
  queueing, a worker leasing and executing the run, storing the result, and waking the waiting
  request. `echo` is built in (returns its input, in process); `hello` is `examples/hello.py`, a
  script workflow that starts a fresh process per run. Percentiles are nearest-rank (for N=30 the
  p99 is the maximum). Every answer is checked against the expected body.
"""


def render(results: list[BackendResult], command: str, plan: Plan, started: dt.datetime) -> str:
    lines = [
        "# Switchboard benchmark results",
        "",
        f"- Date: {started.strftime('%Y-%m-%d %H:%M %Z').strip()}",
        f"- Command: `{command}` (from the repository root)",
        f"- wrk: {plan.duration:g} s per level, after a {plan.warmup:g} s warm-up at c=10",
    ]
    lines += [f"- {name}: {value}" for name, value in machine_facts()]
    code_now = code_version()
    lines.append(f"- Code measured: {plan.code}")
    if code_now != plan.code:
        lines.append(f"- **The code changed during the run**: at its end, {code_now}")
    lines.append(
        f"- Machine CPU use just before the run (2 s): {plan.busy_before:.0f}% of one CPU "
        "(other processes; ideally ~0)"
    )
    lines += [
        "",
        "## Intake: accepted runs (`POST /run_async/echo/`, server `--role web`)",
        "",
        _row(INTAKE_HEADER),
        "|---|" + "--:|" * (len(INTAKE_HEADER) - 8) + "---|" + "--:|" * 6,
    ]
    for backend in results:
        for r in backend.intake:
            ok, detail = r.check()
            lines.append(
                _row(
                    [
                        backend.backend,
                        r.connections,
                        r.threads,
                        f"{r.rps:,.0f}",
                        f"{r.accepted_per_s:,.0f}",
                        fmt_ms(r.p50_ms),
                        fmt_ms(r.p99_ms),
                        f"{r.ok:,}",
                        r.non2xx,
                        r.errors,
                        r.in_flight,
                        f"{r.stored:,}",
                        (detail if ok else f"**FAIL**: {detail}")
                        + (f" (attempt {r.attempt})" if r.attempt > 1 else "")
                        + (" (disturbed)" if r.disturbance > DISTURBED else ""),
                        f"{r.cpu.server:.0f}",
                        f"{r.cpu.load_generator:.0f}",
                        f"{r.cpu.database:.0f}" if backend.backend == "postgres" else "-",
                        f"{r.cpu.other:.0f}",
                        f"{r.cpu.steal:.0f}",
                        f"{r.cpu.iowait:.0f}",
                    ]
                )
            )
    lines += [
        "",
        "## End to end: sequential synchronous runs (server web + worker)",
        "",
        _row(LATENCY_HEADER),
        "|---|---|" + "--:|" * (len(LATENCY_HEADER) - 3) + "---|",
    ]
    for backend in results:
        for lat in backend.latency:
            lines.append(
                _row(
                    [
                        backend.backend,
                        f"`{lat.name}`",
                        f"{len(lat.samples_ms)}/{lat.requested}",
                        fmt_ms(lat.p50),
                        fmt_ms(lat.p99),
                        fmt_ms(lat.mean),
                        fmt_ms(max(lat.samples_ms, default=math.nan)),
                        "; ".join(lat.failures) or "none",
                    ]
                )
            )
    lines += ["", "## Target", ""]
    sqlite50 = next(
        (r for b in results if b.backend == "sqlite" for r in b.intake if r.connections == 50), None
    )
    if sqlite50 is None:
        lines.append("SQLite at 50 connections was not measured.")
    else:
        met = sqlite50.accepted_per_s >= TARGET_RPS and sqlite50.p99_ms <= TARGET_P99_MS
        lines.append(
            f"≥ {TARGET_RPS:,.0f} accepted runs/s with SQLite at 50 connections, with p99 ≤ "
            f"{TARGET_P99_MS:g} ms. Measured: {sqlite50.accepted_per_s:,.0f} runs/s, p99 "
            f"{sqlite50.p99_ms:.2f} ms: **{'met' if met else 'NOT met'}**."
        )
        if sqlite50.disturbance > DISTURBED:
            lines.append(
                f"Caution: other processes and the hypervisor took {sqlite50.disturbance:.0f}% of "
                "one CPU during that measurement; the figure is disturbed."
            )
    problems = [
        _problem(b.backend, p)
        for b in results
        for p in ([b.error] if b.error else []) + b.stop_problems
    ]
    if problems:
        lines += ["", "## Problems", "", *problems]
    lines += ["", EXPLANATION.rstrip()]
    lines += [f"- {n}" for b in results for n in b.notes]
    return "\n".join(lines) + "\n"


# ---- main ----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="short run: 3 s per level, fewer sequential requests"
    )
    parser.add_argument(
        "--backends", default="sqlite,postgres", help="comma-separated: sqlite, postgres"
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=None,
        help="seconds per wrk level (default 10; 3 with --quick)",
    )
    parser.add_argument(
        "--output", type=Path, default=BENCH / "RESULTS.md", help="results file (overwritten)"
    )
    parser.add_argument(
        "--env-dir",
        type=Path,
        default=Path(
            os.environ.get(
                "SWITCHBOARD_RUNTIME__ENV_DIR", Path.home() / ".cache" / "sbtest" / "envs"
            )
        ),
    )
    parser.add_argument(
        "--uv-cache-dir",
        type=Path,
        default=Path(
            os.environ.get(
                "SWITCHBOARD_RUNTIME__UV_CACHE_DIR", Path.home() / ".cache" / "sbtest" / "uv"
            )
        ),
    )
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        metavar="DIR",
        help="also record a py-spy profile of an extra c=50 intake run into DIR",
    )
    parser.add_argument(
        "--wait-idle",
        type=float,
        default=0,
        metavar="SECONDS",
        help="before starting and before each wrk level, wait up to SECONDS for the machine to "
        "be idle (other processes < 15%% of a CPU)",
    )
    parser.add_argument(
        "--setting",
        action="append",
        default=[],
        metavar="SECTION__KEY=VALUE",
        help="extra server setting, e.g. SERVER__SQLITE_SYNCHRONOUS=NORMAL (repeatable); "
        "becomes SWITCHBOARD_SECTION__KEY for every server and CLI call",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the temp dir (server logs, databases)"
    )
    args = parser.parse_args(argv)

    raw_argv = sys.argv[1:] if argv is None else argv
    command = shlex.join([".venv/bin/python", "bench/run.py", *raw_argv])
    duration = args.duration if args.duration is not None else (3.0 if args.quick else 10.0)
    if not 1 <= duration <= 600:
        parser.error("--duration must be between 1 and 600 seconds")
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if not backends or set(backends) - {"sqlite", "postgres"}:
        parser.error("--backends takes a comma-separated list of sqlite, postgres")
    if shutil.which("wrk") is None:
        print("bench: wrk not found; install it with `apt-get install -y wrk`", file=sys.stderr)
        return 2

    extra_settings: dict[str, str] = {}
    for setting in args.setting:
        name, sep, value = setting.partition("=")
        if not sep or "__" not in name:
            parser.error(f"--setting takes SECTION__KEY=VALUE, not {setting!r}")
        extra_settings[f"SWITCHBOARD_{name.upper()}"] = value

    started = dt.datetime.now().astimezone()
    work = Path(tempfile.mkdtemp(prefix="switchboard-bench-"))
    base_env = {
        **clean_environ(),
        "SWITCHBOARD_RUNTIME__REGISTER_EXAMPLES": "false",
        "SWITCHBOARD_RUNTIME__ENV_DIR": str(args.env_dir),
        "SWITCHBOARD_RUNTIME__UV_CACHE_DIR": str(args.uv_cache_dir),
        **extra_settings,
    }
    plan = Plan(
        duration=duration,
        warmup=1.0 if args.quick else 3.0,
        echo_n=50 if args.quick else 300,
        hello_n=5 if args.quick else 30,
        base_env=base_env,
        work=work,
        profile_dir=args.profile,
        wait_idle=args.wait_idle,
    )
    log(f"work dir {work}")
    plan.code = code_version()
    plan.busy_before = wait_until_idle(args.wait_idle)
    if plan.busy_before > 25:
        log(
            f"the machine is busy before we start ({plan.busy_before:.0f}% of one CPU); "
            "the figures will suffer"
        )
    results: list[BackendResult] = []
    try:
        for backend in backends:
            try:
                results.append(measure_backend(backend, plan))
            except Exception as exc:  # a backend that cannot start (e.g. no PostgreSQL) is reported
                results.append(BackendResult(backend, error=f"{type(exc).__name__}: {exc}"))
                log(f"{backend}: {type(exc).__name__}: {exc}")
    finally:
        if args.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    report = render(results, command, plan, started)
    args.output.write_text(report, encoding="utf-8")
    print(report)
    log(f"written {args.output}")
    failed = any(
        b.error
        or b.stop_problems
        or any(not r.check()[0] for r in b.intake)
        or any(not lat.ok for lat in b.latency)
        for b in results
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
