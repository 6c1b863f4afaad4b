"""WhatsApp intake benchmark: signed Twilio webhooks accepted per second, and ack latency.

Usage (from the repository root)::

    .venv/bin/python bench/whatsapp.py [--duration 10] [--database sqlite|postgres]
        [--profile FILE] [--loop-debug] [--output bench/RESULTS.md]

Starts ``switchboard serve --role web`` on a fresh SQLite data dir (or, with ``--database
postgres``, a throwaway PostgreSQL from tests/pgserver.py) with the WhatsApp channel on
(``[whatsapp] workflow = "echo"``), pre-signs distinct Twilio message webhooks (one MessageSid
each, 1,000 users, signed with ``RequestValidator.compute_signature`` for the server's URL) and
loads ``POST /twilio/whatsapp`` with ``wrk`` (bench/whatsapp.lua) at 10 and 50 connections. Each
answer is the empty TwiML ack, sent after the run request is committed. Afterwards the ``runs``
table must hold exactly the messages wrk saw acknowledged (plus those in flight at the stop).
The section is appended to ``--output`` (bench/RESULTS.md). All traffic is to 127.0.0.1.

``--profile FILE`` records a py-spy profile (collapsed stacks; summarise with
bench/profile_top.py) of the c=50 level. ``--loop-debug`` runs the server with asyncio's debug
mode, which logs every callback that holds the event loop for more than 100 ms: it tells a stall
of the loop (our code blocking) from a stall of the database commit (which runs off the loop).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

from run import (  # bench/run.py: the server, wrk parsing and CPU accounting are shared
    REPO,
    BenchError,
    CpuMeter,
    Server,
    WrkResult,
    bench_database,
    clean_environ,
    fmt_ms,
    log,
    process_seconds,
    run_wrk_script,
)
from twilio.request_validator import RequestValidator

sys.path.insert(0, str(REPO))
from tests.fakes.twilio_api import (
    ACCOUNT_SID,
    whatsapp_message_form,
)

LUA_SCRIPT = Path(__file__).resolve().parent / "whatsapp.lua"
AUTH_TOKEN = "bench-token"
LEVELS = ((10, 2), (50, 2))
TARGET_RPS = 3000.0
TARGET_P99_MS = 25.0


def signed_bodies(url: str, count: int, first: int, path: Path) -> None:
    """``count`` distinct webhooks as ``signature\\tbody`` lines."""
    validator = RequestValidator(AUTH_TOKEN)
    with path.open("w") as out:
        for n in range(first, first + count):
            user = f"whatsapp:+1555{n % 1000:07d}"
            params = whatsapp_message_form(
                f"Hello, this is message {n}. What is the weather like today?",
                sid=f"SM{n:032d}",
                user=user,
                profile_name=f"User {n % 1000}",
            )
            out.write(f"{validator.compute_signature(url, params)}\t{urlencode(params)}\n")


def run_wrk(url: str, bodies: Path, connections: int, threads: int, seconds: float) -> WrkResult:
    env = {
        **clean_environ(),
        "SWITCHBOARD_BENCH_BODIES": str(bodies),
        "SWITCHBOARD_BENCH_THREADS": str(threads),
    }
    return run_wrk_script(LUA_SCRIPT, url, connections, threads, seconds, env=env)


def start_profile(pid: int, out: Path) -> subprocess.Popen[bytes]:
    """py-spy (``.venv/bin/pip install py-spy``) sampling the server until SIGINT."""
    py_spy = Path(sys.executable).parent / "py-spy"
    if not py_spy.is_file():
        raise BenchError("--profile needs py-spy: .venv/bin/pip install py-spy")
    return subprocess.Popen(
        [
            *(str(py_spy), "record", "--pid", str(pid), "--rate", "200", "--format", "raw"),
            *("--output", str(out), "--nonblocking"),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def slow_callbacks(log_path: Path) -> list[str]:
    """asyncio debug mode's "Executing <callback> took N seconds" lines in the server log."""
    with contextlib.suppress(OSError):
        text = log_path.read_text(encoding="utf-8", errors="replace")
        return [line for line in text.splitlines() if "Executing" in line and " took " in line]
    return []


def measure(
    duration: float,
    workdir: Path,
    *,
    database_kind: str,
    profile: Path | None,
    loop_debug: bool,
) -> list[WrkResult]:
    stack = contextlib.ExitStack()
    with stack:
        return _measure(duration, workdir, stack, database_kind, profile, loop_debug)


def _measure(
    duration: float,
    workdir: Path,
    stack: contextlib.ExitStack,
    database_kind: str,
    profile: Path | None,
    loop_debug: bool,
) -> list[WrkResult]:
    database = bench_database(database_kind, stack, workdir, "data")
    base_env = {
        **clean_environ(),
        "SWITCHBOARD_WHATSAPP__ACCOUNT_SID": ACCOUNT_SID,
        "SWITCHBOARD_WHATSAPP__AUTH_TOKEN": AUTH_TOKEN,
        "SWITCHBOARD_WHATSAPP__WORKFLOW": "echo",
        "SWITCHBOARD_RUNTIME__REGISTER_EXAMPLES": "false",
        "SWITCHBOARD_SERVER__LOG_LEVEL": "WARNING",
    }
    if loop_debug:
        base_env["PYTHONASYNCIODEBUG"] = "1"
    server = Server(database, base_env, "web", workdir / "server.log")
    server.start()
    results: list[WrkResult] = []
    try:
        url = f"{server.url}/twilio/whatsapp"
        per_level = int(duration * 12_000)
        warmup = workdir / "warmup.txt"
        signed_bodies(url, 20_000, 10**9, warmup)
        log("warm-up: 3 s at 10 connections")
        run_wrk(url, warmup, 10, 2, 3)
        for index, (connections, threads) in enumerate(LEVELS):
            bodies = workdir / f"level-{index}.txt"
            signed_bodies(url, per_level, index * per_level, bodies)
            before = database.settled_count()
            recorder = None
            if profile is not None and connections == 50:
                recorder = start_profile(server.pid, profile)
            load = os.getloadavg()[0]
            cpu_before = process_seconds(server.pid)
            with CpuMeter(server.pid, database.server_pids) as meter:
                result = run_wrk(url, bodies, connections, threads, duration)
            result.cpu = meter.use
            result.server_cpu_seconds = process_seconds(server.pid) - cpu_before
            result.load_average = load
            if recorder is not None:
                recorder.send_signal(signal.SIGINT)  # py-spy writes its profile on Ctrl-C
                recorder.wait(30)
            server.check_alive()
            result.stored = database.settled_count() - before
            _, verdict = result.check()
            log(
                f"c={connections}: {result.accepted_per_s:,.0f} acks/s, p50 "
                f"{fmt_ms(result.p50_ms)} ms, p99 {fmt_ms(result.p99_ms)} ms, "
                f"{result.cpu_ms_per_ok:.3f} ms CPU/ack, load {load:.2f}, check {verdict}"
            )
            results.append(result)
    finally:
        server.stop()
    if loop_debug:
        slow = slow_callbacks(workdir / "server.log")
        log(f"--loop-debug: {len(slow)} callbacks held the event loop > 100 ms")
        for line in slow[:20]:
            log(f"  {line}")
    return results


def section(results: list[WrkResult], duration: float, database: str) -> str:
    commit = subprocess.run(
        ["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    store = (
        "SQLite (`synchronous=FULL`), fresh data dir"
        if database == "sqlite"
        else "PostgreSQL (throwaway server of tests/pgserver.py: fsync=off, synchronous_commit=off)"
    )
    lines = [
        "",
        f"### WhatsApp intake, {database}",
        "",
        f"- Date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC; code measured: git {commit}",
        f"- Command: `.venv/bin/python bench/whatsapp.py --duration {duration:g} "
        f"--database {database}` (from the repository root)",
        f"- {store}; every request a distinct, correctly signed message (text only) from one of "
        "1,000 users; answer = empty TwiML after the run is committed.",
        "",
        "| conns | acks/s | p50 ms | p99 ms | server CPU ms/ack | 2xx | non-2xx | socket errors "
        "| stored in db | check | server CPU % | other CPU % | load avg |",
        "|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|--:|--:|--:|",
    ]
    for r in results:
        _, verdict = r.check()
        lines.append(
            f"| {r.connections} | {r.accepted_per_s:,.0f} | {fmt_ms(r.p50_ms)} "
            f"| {fmt_ms(r.p99_ms)} | {r.cpu_ms_per_ok:.3f} | {r.ok:,} | {r.non2xx} | {r.errors} "
            f"| {r.stored:,} | {verdict} | {r.cpu.server:.0f} | {r.cpu.other:.0f} "
            f"| {r.load_average:.2f} |"
        )
    at50 = next((r for r in results if r.connections == 50), None)
    if at50 is not None:
        met = at50.accepted_per_s >= TARGET_RPS and at50.p99_ms <= TARGET_P99_MS
        lines += [
            "",
            f"Target: ≥ {TARGET_RPS:,.0f} acks/s at 50 connections with p99 ≤ "
            f"{TARGET_P99_MS:g} ms. Measured: {at50.accepted_per_s:,.0f}/s, p99 "
            f"{fmt_ms(at50.p99_ms)} ms: **{'met' if met else 'NOT met'}**.",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per level")
    parser.add_argument("--database", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument(
        "--profile", type=Path, help="record a py-spy profile of the c=50 level (collapsed stacks)"
    )
    parser.add_argument(
        "--loop-debug",
        action="store_true",
        help="asyncio debug mode in the server: list callbacks that held the loop > 100 ms "
        "(slows the server: its figures are not comparable)",
    )
    parser.add_argument("--output", type=Path, default=REPO / "bench" / "RESULTS.md")
    args = parser.parse_args(argv)
    try:
        with tempfile.TemporaryDirectory(prefix="sb-bench-whatsapp-") as workdir:
            results = measure(
                args.duration,
                Path(workdir),
                database_kind=args.database,
                profile=args.profile,
                loop_debug=args.loop_debug,
            )
    except BenchError as exc:
        log(f"error: {exc}")
        return 2
    text = section(results, args.duration, args.database)
    print(text)
    with args.output.open("a") as out:
        out.write(text)
    return 0 if all(r.check()[0] for r in results) else 1


if __name__ == "__main__":
    started = time.monotonic()
    status = main()
    log(f"done in {time.monotonic() - started:.0f} s")
    sys.exit(status)
