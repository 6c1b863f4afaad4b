"""WhatsApp intake benchmark: signed Twilio webhooks accepted per second, and ack latency.

Usage (from the repository root)::

    .venv/bin/python bench/whatsapp.py [--duration 10] [--output bench/RESULTS.md]

Starts ``switchboard serve --role web`` on a fresh SQLite data dir with the WhatsApp channel on
(``[whatsapp] workflow = "echo"``), pre-signs distinct Twilio message webhooks (one MessageSid
each, 1,000 users, signed with ``RequestValidator.compute_signature`` for the server's URL) and
loads ``POST /twilio/whatsapp`` with ``wrk`` (bench/whatsapp.lua) at 10 and 50 connections. Each
answer is the empty TwiML ack, sent after the run request is committed. Afterwards the ``runs``
table must hold exactly the messages wrk saw acknowledged (plus those in flight at the stop).
The section is appended to ``--output`` (bench/RESULTS.md). All traffic is to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import datetime as dt
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
    Database,
    Server,
    WrkResult,
    clean_environ,
    fmt_ms,
    log,
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


def measure(duration: float, workdir: Path) -> list[WrkResult]:
    database = Database(kind="sqlite", data_dir=workdir / "data")
    base_env = {
        **clean_environ(),
        "SWITCHBOARD_WHATSAPP__ACCOUNT_SID": ACCOUNT_SID,
        "SWITCHBOARD_WHATSAPP__AUTH_TOKEN": AUTH_TOKEN,
        "SWITCHBOARD_WHATSAPP__WORKFLOW": "echo",
        "SWITCHBOARD_RUNTIME__REGISTER_EXAMPLES": "false",
        "SWITCHBOARD_SERVER__LOG_LEVEL": "WARNING",
    }
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
            with CpuMeter(server.pid, database.server_pids) as meter:
                result = run_wrk(url, bodies, connections, threads, duration)
            result.cpu = meter.use
            server.check_alive()
            result.stored = database.settled_count() - before
            _, verdict = result.check()
            log(
                f"c={connections}: {result.accepted_per_s:,.0f} acks/s, p50 "
                f"{fmt_ms(result.p50_ms)} ms, p99 {fmt_ms(result.p99_ms)} ms, check {verdict}"
            )
            results.append(result)
    finally:
        server.stop()
    return results


def section(results: list[WrkResult], duration: float) -> str:
    commit = subprocess.run(
        ["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    lines = [
        "",
        "## WhatsApp intake: signed Twilio webhooks (`POST /twilio/whatsapp`, server `--role web`)",
        "",
        f"- Date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC; code measured: git {commit}",
        f"- Command: `.venv/bin/python bench/whatsapp.py --duration {duration:g}` "
        "(from the repository root)",
        "- SQLite, fresh data dir; every request a distinct, correctly signed message "
        "(text only) from one of 1,000 users; answer = empty TwiML after the run is committed.",
        f"- wrk {duration:g} s per level after a 3 s warm-up at c=10; the machine (2 CPUs) was "
        "shared with other engineers' builds and tests while this ran: figures are noisy.",
        "",
        "| conns | wrk threads | acks/s | p50 ms | p99 ms | 2xx | non-2xx | socket errors "
        "| stored in db | check | server CPU % | wrk CPU % | other CPU % |",
        "|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|--:|--:|--:|",
    ]
    for r in results:
        _, verdict = r.check()
        lines.append(
            f"| {r.connections} | {r.threads} | {r.accepted_per_s:,.0f} | {fmt_ms(r.p50_ms)} "
            f"| {fmt_ms(r.p99_ms)} | {r.ok:,} | {r.non2xx} | {r.errors} | {r.stored:,} "
            f"| {verdict} | {r.cpu.server:.0f} | {r.cpu.load_generator:.0f} "
            f"| {r.cpu.other:.0f} |"
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
    parser.add_argument("--output", type=Path, default=REPO / "bench" / "RESULTS.md")
    args = parser.parse_args(argv)
    try:
        with tempfile.TemporaryDirectory(prefix="sb-bench-whatsapp-") as workdir:
            results = measure(args.duration, Path(workdir))
    except BenchError as exc:
        log(f"error: {exc}")
        return 2
    text = section(results, args.duration)
    print(text)
    with args.output.open("a") as out:
        out.write(text)
    return 0 if all(r.check()[0] for r in results) else 1


if __name__ == "__main__":
    started = time.monotonic()
    status = main()
    log(f"done in {time.monotonic() - started:.0f} s")
    sys.exit(status)
