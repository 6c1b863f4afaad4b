"""Intake, side by side: Switchboard's edges against the reference ceiling, in one run (issue 12).

Usage (from the repository root)::

    .venv/bin/python -m bench.intake [--duration 10] [--backends sqlite,postgres]
        [--targets slack,twilio,run_async] [--no-latency] [--output bench/RESULTS.md]

For each target, Switchboard ``serve --role web`` (SQLite ``synchronous=FULL``, or the throwaway
PostgreSQL of tests/pgserver.py) and bench/reference.py are loaded one after the other by wrk at
50 connections with the same kind of requests: distinct, signed Slack ``app_mention`` events;
distinct, signed Twilio WhatsApp webhooks; ``POST /run_async/echo/``. Afterwards every
acknowledged event must be in the store (:mod:`bench.stored`). Then :mod:`bench.inbox_latency`
measures inbox -> run request at a paced 1,000 events/s. The section "Intake, side by side" of
RESULTS.md is replaced. All traffic is to 127.0.0.1; secrets reach the processes by environment.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import secrets
import shlex
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench import events, report, stored
from bench.cpu import CpuMeter, postgres_pids, process_seconds
from bench.harness import (
    Backend,
    BenchError,
    ReferenceProcess,
    Store,
    clean_environ,
    create_key,
    log,
    postgres_store,
    sqlite_store,
    start_switchboard,
)
from bench.inbox_latency import LatencyResult, measure_inbox_latency
from bench.loads import PATHS, load
from bench.profile import recording
from bench.wrk import WrkResult
from tests.fakes.slack_api import SlackApi
from tests.pgserver import ThrowawayPostgres

SECTION = "## Intake, side by side (bench/intake.py, issue 12)"
CONNECTIONS, THREADS = 50, 2
TARGET_RATIO, TARGET_P99_MS = 0.7, 25.0


@dataclass
class Row:
    target: str
    server: str  # "switchboard (sqlite)" | "reference"
    wrk: WrkResult
    pool: int  # distinct events in the pool (0: run_async, every request is new anyway)
    counted_in: str
    ratio: float = float("nan")


@dataclass
class Outcome:
    rows: list[Row] = field(default_factory=list)
    latency: list[LatencyResult] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def switchboard_env(api_url: str) -> dict[str, str]:
    return {
        **clean_environ(),
        "SWITCHBOARD_SERVER__SQLITE_SYNCHRONOUS": "FULL",
        "SWITCHBOARD_SERVER__LOG_LEVEL": "WARNING",
        "SWITCHBOARD_RUNTIME__REGISTER_EXAMPLES": "false",
        "SWITCHBOARD_SLACK__SIGNING_SECRET": events.SLACK_SECRET,
        "SWITCHBOARD_SLACK__BOT_TOKEN": "xoxb-bench",
        "SWITCHBOARD_SLACK__API_URL": api_url,
        "SWITCHBOARD_SLACK__WORKFLOW": "echo",
        "SWITCHBOARD_WHATSAPP__ACCOUNT_SID": events.TWILIO_ACCOUNT,
        "SWITCHBOARD_WHATSAPP__AUTH_TOKEN": events.TWILIO_TOKEN,
        "SWITCHBOARD_WHATSAPP__WORKFLOW": "echo",
    }


async def measure(
    target: str,
    server: str,
    base_url: str,
    key: str,
    store: Store,
    counter: stored.Counter,
    pids: tuple[int, Callable[[], list[int]]],
    work: Path,
    seconds: float,
    profile: Path | None = None,
) -> Row:
    """One row: warm-up, the measured load (under py-spy with ``profile``), the stored check."""
    await load(target, base_url, key, work, 2, 10, pool_size=20_000)  # warm-up, its own events
    counters = [c for c in (counter, counter.fallback) if c is not None]
    before = [await store.settled(c.sql) for c in counters]
    cpu_before = process_seconds(pids[0])
    with CpuMeter(*pids) as meter, recording(pids[0], profile):
        result, pool = await load(target, base_url, key, work, seconds)
    result.cpu = meter.use
    result.server_cpu_seconds = process_seconds(pids[0]) - cpu_before
    gained = [await store.settled(c.sql) - was for c, was in zip(counters, before, strict=True)]
    used = next((i for i, n in enumerate(gained) if n > 0), 0)
    counter, result.stored = counters[used], gained[used]
    verdict = result.check()[1]
    log(
        f"{target} {server}: {result.accepted_per_s:,.0f}/s p50 {report.fmt_ms(result.p50_ms)} "
        f"p99 {report.fmt_ms(result.p99_ms)} ms; stored {result.stored:,} ({verdict})"
    )
    return Row(target, server, result, pool, counter.name)


async def side_by_side(
    backend: Backend, pg: ThrowawayPostgres | None, args: argparse.Namespace, work: Path
) -> list[Row]:
    seconds: float = args.duration
    store = postgres_store(pg, work, f"sb_{backend}") if pg else sqlite_store(work, "sb-sqlite")
    reference_key = secrets.token_urlsafe(24)
    reference = ReferenceProcess(
        work / f"reference-{backend}.db",
        {
            "BENCH_SLACK_SECRET": events.SLACK_SECRET,
            "BENCH_TWILIO_TOKEN": events.TWILIO_TOKEN,
            "BENCH_API_KEY": reference_key,
        },
        work,
    )
    rows: list[Row] = []
    async with SlackApi.running() as slack_api:
        env = switchboard_env(slack_api.api_url)
        key = await create_key(store, env)
        server = await start_switchboard(store, env, "web", work, f"switchboard-{backend}")
        try:
            await reference.wait_ready()
            db_pids = (lambda: postgres_pids(pg.port)) if pg else list
            for target in args.targets:
                profile = args.profile / f"{target}-{backend}.txt" if args.profile else None
                counter = await stored.switchboard_counter(store, target)
                rows.append(
                    await measure(
                        target, f"switchboard ({backend})", server.url, key, store, counter,
                        (server.pid, db_pids), work, seconds, profile,
                    )
                )  # fmt: skip
                ref = await measure(
                    target, "reference", reference.url, reference_key, reference.store(),
                    stored.reference_counter(target), (reference.pid, list), work, seconds,
                )  # fmt: skip
                rows[-1].ratio = rows[-1].wrk.accepted_per_s / max(1.0, ref.wrk.accepted_per_s)
                rows.append(ref)
        finally:
            server.stop()
            reference.stop()
    return rows


async def run(args: argparse.Namespace, work: Path) -> Outcome:
    outcome = Outcome()
    for backend in args.backends:
        with contextlib.ExitStack() as stack:
            try:
                pg = stack.enter_context(ThrowawayPostgres()) if backend == "postgres" else None
                outcome.rows += await side_by_side(backend, pg, args, work)
                if args.latency:
                    outcome.latency.append(
                        await measure_inbox_latency(
                            backend, pg, work, args.latency_seconds, switchboard_env
                        )
                    )
            except (BenchError, OSError, RuntimeError) as exc:
                outcome.problems.append(f"{backend}: {type(exc).__name__}: {exc}")
                log(outcome.problems[-1])
    return outcome


HEADER = [
    "target", "server", "events/s", "x reference", "ack p50 ms", "ack p99 ms", "2xx", "non-2xx",
    "socket errors", "in flight", "stored", "counted in", "check", "server CPU %",
    "server CPU ms/event", "wrk CPU %", "other CPU %", "iowait %",
]  # fmt: skip


def render(outcome: Outcome, command: str, started: dt.datetime, seconds: float) -> str:
    lines = [
        SECTION,
        "",
        f"- Date: {started:%Y-%m-%d %H:%M} UTC; code measured: {report.code_version()}",
        f"- Command: `{command}` (from the repository root)",
        f"- wrk c={CONNECTIONS}, {THREADS} threads, {seconds:g} s per row after a 2 s warm-up at "
        "c=10 (its own events). Switchboard `serve --role web`; SQLite `synchronous=FULL` (WAL); "
        "PostgreSQL is tests/pgserver.py's throwaway server (fsync=off). The reference is "
        "bench/reference.py on SQLite (WAL, `synchronous=FULL`), measured right after each "
        "Switchboard row.",
        "- Every Slack and Twilio request is a distinct event, signed for real (pool signed "
        "just before its row, inside Slack's 5-minute window); *stored* counts what the store "
        "gained during the row (*counted in*: the table read).",
        "- " + ", ".join(f"{name}: {value}" for name, value in report.machine_facts()),
        "",
    ]
    rows = []
    for r in outcome.rows:
        w = r.wrk
        ok, verdict = w.check()
        repeats = max(0, w.ok + w.in_flight - r.pool) if r.pool else 0
        rows.append(
            [
                r.target, r.server, f"{w.accepted_per_s:,.0f}",
                "1" if r.server == "reference" else f"{r.ratio:.2f}",
                report.fmt_ms(w.p50_ms), report.fmt_ms(w.p99_ms), f"{w.ok:,}", w.non2xx, w.errors,
                w.in_flight, f"{w.stored:,}", r.counted_in,
                (verdict if ok else f"**FAIL**: {verdict}")
                + (f" (pool of {r.pool:,} ran out: {repeats:,} repeats)" if repeats else ""),
                f"{w.cpu.server:.0f}", f"{w.cpu_ms_per_ok:.3f}", f"{w.cpu.load_generator:.0f}",
                f"{w.cpu.other:.0f}", f"{w.cpu.iowait:.0f}",
            ]
        )  # fmt: skip
    lines += report.table(HEADER, rows, right=2)
    lines += ["", "Bars (issue 12): ≥ 0.7x the reference, ack p99 ≤ 25 ms, every ack stored:", ""]
    for r in outcome.rows:
        if r.server == "reference":
            continue
        met = r.ratio >= TARGET_RATIO and r.wrk.p99_ms <= TARGET_P99_MS and r.wrk.check()[0]
        lines.append(
            f"- {r.target}, {r.server}: {r.ratio:.2f}x, p99 {report.fmt_ms(r.wrk.p99_ms)} ms: "
            f"**{'met' if met else 'NOT met'}**"
        )
    if outcome.latency:
        lines += ["", *LatencyResult.render(outcome.latency)]
    if outcome.problems:
        lines += ["", "Problems:", "", *(f"- {p}" for p in outcome.problems)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per row")
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--targets", default="slack,twilio,run_async")
    parser.add_argument("--no-latency", dest="latency", action="store_false")
    parser.add_argument("--latency-seconds", type=float, default=10.0)
    parser.add_argument("--output", type=Path, default=report.RESULTS)
    parser.add_argument(
        "--profile", type=Path, metavar="DIR", help="py-spy Switchboard in each row (slows it)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work dir (server logs)")
    args = parser.parse_args(argv)
    args.backends = [b for b in args.backends.split(",") if b]
    args.targets = [t for t in args.targets.split(",") if t]
    if set(args.backends) - {"sqlite", "postgres"} or set(args.targets) - set(PATHS):
        parser.error(f"--backends: sqlite,postgres; --targets: {','.join(PATHS)}")
    if shutil.which("wrk") is None:
        log("wrk not found: bash scripts/setup dev installs it (Debian package wrk)")
        return 2
    command = shlex.join([".venv/bin/python", "-m", "bench.intake", *(argv or sys.argv[1:])])
    started = dt.datetime.now(dt.UTC)
    work = Path(tempfile.mkdtemp(prefix="sb-bench-intake-"))
    try:
        outcome = asyncio.run(run(args, work))
    finally:
        if args.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    text = render(outcome, command, started, args.duration)
    print(text)
    report.replace_section(text, args.output)
    failed = outcome.problems or any(not r.wrk.check()[0] for r in outcome.rows)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
