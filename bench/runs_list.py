"""The runs list's first page with 200,000 runs in the database (issue 13: ≤ 100 ms).

Usage (from the repository root)::

    .venv/bin/python -m bench.runs_list [--runs 200000] [--backends sqlite,postgres]
        [--requests 30] [--output FILE]

A fresh store at the latest schema gets ``--runs`` runs written straight into its ``runs`` table
(setup, not measured: 30 days of them, 3 owners, 20 workflows, every status and source, a JSON
input and output each, a duration on the finished ones), then ``switchboard serve --role web``
answers ``GET /api/v1/runs`` over HTTP with an admin key: ``--requests`` sequential requests per
filter after 3 warm-up ones, timed from the request's first byte to the answer's last.

The reference, measured in the same run against the same server: ``GET /api/v1/runs/{id}``, one
run read by its primary key (the same authentication, JSON and HTTP path; the floor a list
request cannot beat). Search (``q``) has no text index: a word most runs contain fills its page
at once, a rare or absent one reads the inputs and outputs of the page's whole window (20,000
runs, ``core.run_catalog.SEARCH_WINDOW``).
Replaces the ``## Runs list`` section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from bench import report
from bench.harness import (
    Backend,
    BenchError,
    Store,
    clean_environ,
    cli,
    postgres_store,
    sqlite_store,
    start_switchboard,
)
from core.db import Database
from core.tables import owners
from dispatch.tables import runs
from tests.pgserver import ThrowawayPostgres

HEADING = "## Runs list (bench/runs_list.py, issue 13)"
TARGET_MS = 100.0
OWNERS = ("default", "team-a", "team-b")
WORKFLOWS = tuple(f"wf-{n:02d}" for n in range(20))
SOURCES = ("api", "slack", "whatsapp", "email", "schedule", "replay")
# Roughly what a service that has been up a month holds: mostly finished runs.
STATUSES = (("completed", 0.86), ("failed", 0.1), ("cancelled", 0.02), ("queued", 0.02))
WORDS = ("invoice", "refund", "order", "report", "ticket", "summary", "digest", "alert")
RARE = "zanzibar"  # in one run of 20,000
ABSENT = "nowhere-to-be-found"
CHUNK = 5000


@dataclass(frozen=True)
class Case:
    name: str
    params: dict[str, str]
    note: str = ""


def cases(day: datetime) -> list[Case]:
    since = day.isoformat()
    until = (day + timedelta(days=1)).isoformat()
    return [
        Case("newest first (no filter)", {}),
        Case("status=failed", {"status": "failed"}),
        Case("status=queued (2 %)", {"status": "queued"}),
        Case("source=slack", {"source": "slack"}),
        Case("service_id=wf-07", {"service_id": "wf-07"}),
        Case("owner=team-b", {"owner": "team-b"}),
        Case("since/until: one day", {"since": since, "until": until}),
        Case(
            "status + source + service_id",
            {"status": "completed", "source": "email", "service_id": "wf-03"},
        ),
        Case("sort=-duration", {"sort": "-duration"}),
        Case("sort=created (oldest first)", {"sort": "created"}),
        Case("q=order (in 1 of 8 runs)", {"q": "order"}),
        Case("q=rare word (1 run in 20,000)", {"q": RARE}, "reads its window"),
        Case("q=absent word", {"q": ABSENT}, "reads its window"),
        Case("failed, 2nd page (cursor)", {"status": "failed"}, "cursor"),
    ]


@dataclass(frozen=True)
class Timing:
    name: str
    found: int
    samples_ms: tuple[float, ...]
    note: str

    def row(self) -> list[object]:
        p95 = report.percentile(list(self.samples_ms), 95)
        verdict = "reference" if self.note == "reference" else self._verdict(p95)
        return [
            self.name,
            self.found,
            report.fmt_ms(report.percentile(list(self.samples_ms), 50)),
            report.fmt_ms(p95),
            report.fmt_ms(max(self.samples_ms)),
            verdict,
            self.note if self.note not in ("cursor", "reference") else "",
        ]

    @staticmethod
    def _verdict(p95: float) -> str:
        return "met" if p95 <= TARGET_MS else "**NOT met**"


@dataclass(frozen=True)
class Result:
    backend: str
    runs: int
    seed_seconds: float
    timings: list[Timing]


async def seed(url: str, count: int, now: datetime) -> datetime:
    """``count`` runs over the 30 days before ``now``; the start of a day in the middle."""
    rng = random.Random(13)
    database = Database(url)
    start = now - timedelta(days=30)
    try:
        async with database.write() as conn:
            existing = {row.id for row in await conn.execute(owners.select())}
            await conn.execute(
                owners.insert(),
                [{"id": o, "name": o, "created_at": start} for o in OWNERS if o not in existing],
            )
        for first in range(0, count, CHUNK):
            rows = [_run(rng, n, start, count) for n in range(first, min(count, first + CHUNK))]
            async with database.write() as conn:
                await conn.execute(runs.insert(), rows)
    finally:
        await database.dispose()
    return (start + timedelta(days=15)).replace(hour=0, minute=0, second=0, microsecond=0)


def _run(rng: random.Random, n: int, start: datetime, count: int) -> dict[str, object]:
    created = start + timedelta(seconds=30 * 86400 * n / count)
    status = rng.choices([s for s, _ in STATUSES], [w for _, w in STATUSES])[0]
    finished = status in ("completed", "failed", "cancelled")
    duration = rng.randint(20, 30_000) if finished else None
    word = WORDS[n % len(WORDS)]
    text = f"{word} {n} for customer {rng.randint(1, 5000)}"
    if n % 20_000 == 7:
        text += f" {RARE}"
    return {
        "id": f"req_bench{n:012d}",
        "owner_id": OWNERS[n % len(OWNERS)],
        "caller_id": "bench",
        "service_id": WORKFLOWS[rng.randrange(len(WORKFLOWS))],
        "workflow_version": 1,
        "path": "/",
        "method": "POST",
        "status": status,
        "source": SOURCES[rng.randrange(len(SOURCES))],
        "request_body": json.dumps({"text": text}),
        "response_status": 200 if status == "completed" else (500 if finished else None),
        "response_body": json.dumps({"answer": text.upper()}).encode() if finished else None,
        "response_content_type": "application/json" if finished else None,
        "error": "boom" if status == "failed" else None,
        "attempts": 1 if finished else 0,
        "created_at": created,
        "queued_at": created,
        "started_at": created if finished else None,
        "completed_at": created + timedelta(milliseconds=duration) if duration else None,
        "duration_ms": duration,
    }


async def _time(http: httpx.AsyncClient, path: str, params: dict[str, str], n: int) -> Timing:
    found = 0
    samples = []
    for i in range(3 + n):
        started = time.perf_counter()
        answer = await http.get(path, params=params)
        elapsed = (time.perf_counter() - started) * 1000
        if answer.status_code != 200:
            raise BenchError(f"GET {path} {params}: {answer.status_code} {answer.text[:300]}")
        if i >= 3:
            samples.append(elapsed)
        body = answer.json()
        found = len(body["runs"]) if "runs" in body else 1
    return Timing("", found, tuple(samples), "")


async def measure(backend: Backend, count: int, requests: int, work: Path) -> Result:
    with contextlib.ExitStack() as stack:
        pg = stack.enter_context(ThrowawayPostgres()) if backend == "postgres" else None
        store: Store = postgres_store(pg, work, "runs") if pg else sqlite_store(work, "runs")
        env = {
            **clean_environ(),
            "SWITCHBOARD_SERVER__LOG_LEVEL": "WARNING",
            "SWITCHBOARD_RUNTIME__REGISTER_EXAMPLES": "false",
        }
        await cli(store, env, "db", "upgrade")
        key = (await cli(store, env, "keys", "create", "--role", "admin")).strip().splitlines()[-1]
        url = store.url or f"sqlite+aiosqlite:///{store.data_dir / store.sqlite_file}"
        started = time.perf_counter()
        day = await seed(url, count, datetime.now(UTC))
        seeded = time.perf_counter() - started
        report_line = f"{backend}: {count:,} runs written in {seeded:.1f} s"
        print(f"[bench] {report_line}", file=sys.stderr, flush=True)
        server = await start_switchboard(store, env, "web", work, f"runs-list-{backend}")
        timings = []
        try:
            headers = {"Authorization": f"Bearer {key}"}
            async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=60) as http:
                middle = f"/api/v1/runs/req_bench{count // 2:012d}"
                reference = await _time(http, middle, {}, requests)
                timings.append(
                    Timing("reference: one run by id", 1, reference.samples_ms, "reference")
                )
                for case in cases(day):
                    params = dict(case.params)
                    if case.note == "cursor":
                        first = (await http.get("/api/v1/runs", params=params)).json()
                        params["cursor"] = first["next_cursor"]
                    timed = await _time(http, "/api/v1/runs", params, requests)
                    timings.append(Timing(case.name, timed.found, timed.samples_ms, case.note))
        finally:
            server.stop()
    return Result(backend, count, seeded, timings)


def render(results: list[Result], command: str, requests: int) -> str:
    header = ["query (first page, limit 50)", "runs on it", "p50 ms", "p95 ms", "max ms",
              "bar (p95 ≤ 100 ms)", "note"]  # fmt: skip
    lines = [
        HEADING,
        "",
        *(f"- {name}: {value}" for name, value in report.machine_facts()),
        f"- Command: `{command}`",
        f"- Code measured: {report.code_version()}",
        f"- {requests} sequential requests per row after 3 warm-up ones, over HTTP on 127.0.0.1 "
        "with an admin key (httpx, one connection); the server `serve --role web`.",
        "",
    ]
    for result in results:
        lines += [
            f"### {result.backend}: {result.runs:,} runs (written in {result.seed_seconds:.0f} s)",
            "",
            *report.table(header, [t.row() for t in result.timings], right=1),
            "",
        ]
    lines += [
        "Reading: every filter, sort and cursor walks an index on its column and `created_at` (or",
        "`duration_ms`) and stops after 51 rows, so its page costs what the reference costs plus",
        "a few rows. Search has no text index (it would tax every run's write): a word in many",
        "runs fills a page in the first rows it reads; a rare or absent word reads the window of",
        "20,000 runs a page may read (its page can come back short, with a cursor to search on).",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=200_000)
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--output", type=Path, default=report.RESULTS)
    args = parser.parse_args(argv)
    backends: list[Backend] = [b for b in args.backends.split(",") if b in ("sqlite", "postgres")]
    with tempfile.TemporaryDirectory(prefix="sb-bench-runs-") as tmp:
        results = [
            asyncio.run(measure(backend, args.runs, args.requests, Path(tmp) / backend))
            for backend in backends
        ]
    text = render(
        results, "python -m bench.runs_list " + " ".join(argv or sys.argv[1:]), args.requests
    )
    report.replace_section(text, args.output)
    print(text)
    filtered = [t for r in results for t in r.timings if t.note != "reference"]
    return 0 if all(report.percentile(list(t.samples_ms), 95) <= TARGET_MS for t in filtered) else 1


if __name__ == "__main__":
    sys.exit(main())
