"""The benchmark tools measure what they claim: the reference checks signatures and stores before
it answers, wrk's output is read right, and inbox rows are paired with their runs."""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest
from aiohttp import web
from twilio.request_validator import RequestValidator

from bench import events, inbox_latency, report
from bench.harness import Store
from bench.reference import make_app
from bench.wrk import parse_wrk
from tests.fakes.slack_api import signed_headers
from tests.fakes.twilio_api import whatsapp_message_form

WRK_OUTPUT = """\
Running 10s test @ http://127.0.0.1:8000/slack/events
  2 threads and 50 connections
  Latency Distribution
     50%    7.12ms
     75%    9.00ms
     90%   12.00ms
     99%    1.02s
  52000 requests in 10.00s, 4.00MB read
Requests/sec:   5200.00
Transfer/sec:    409.60KB
SBBENCH sent=52051 responses=52000 2xx=51990 non2xx=10 connect=0 read=0 write=0 status=0 timeout=2
"""


@pytest.fixture
async def reference(tmp_path: Path) -> AsyncIterator[tuple[str, Path]]:
    database = tmp_path / "reference.db"
    app = make_app(str(database), events.SLACK_SECRET, events.TWILIO_TOKEN, "key")
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}", database
    await runner.cleanup()


def stored_sources(database: Path) -> list[str]:
    with sqlite3.connect(database) as db:
        return [row[0] for row in db.execute("select source from events")]


async def test_the_reference_stores_a_signed_slack_event_and_refuses_a_bad_signature(
    reference: tuple[str, Path],
) -> None:
    url, database = reference
    body = events.slack_mention(1).decode()
    async with httpx.AsyncClient(base_url=url) as http:
        good = await http.post(
            "/slack/events", content=body, headers=signed_headers(events.SLACK_SECRET, body)
        )
        forged = await http.post(
            "/slack/events", content=body, headers=signed_headers("another-secret", body)
        )
        stale = await http.post(
            "/slack/events",
            content=body,
            headers=signed_headers(events.SLACK_SECRET, body, timestamp=1_700_000_000),
        )
    assert (good.status_code, forged.status_code, stale.status_code) == (200, 401, 401)
    assert stored_sources(database) == ["slack"]


async def test_the_reference_checks_the_twilio_signature_over_its_url(
    reference: tuple[str, Path],
) -> None:
    url, database = reference
    form = whatsapp_message_form("hi", sid=events.twilio_sid(7), user="whatsapp:+15550000007")
    signature = RequestValidator(events.TWILIO_TOKEN).compute_signature(
        f"{url}/twilio/whatsapp", form
    )
    async with httpx.AsyncClient(base_url=url) as http:
        answers = [
            await http.post(
                "/twilio/whatsapp",
                content=urlencode(form),
                headers={
                    "Content-Type": "application/x-www-form-urlencoded",
                    "X-Twilio-Signature": sig,
                },
            )
            for sig in (signature, "forged")
        ]
    assert [a.status_code for a in answers] == [200, 403]
    assert stored_sources(database) == ["whatsapp"]


def test_wrk_output_is_read_with_counts_and_units() -> None:
    result = parse_wrk(WRK_OUTPUT, 50, 2)
    assert (result.p50_ms, result.p99_ms, result.ok, result.non2xx) == (7.12, 1020.0, 51990, 10)
    assert result.in_flight == 50  # sent 52,051 minus wrk's script check, minus 52,000 answered
    result.stored = result.ok + result.in_flight
    assert result.check() == (False, "10 non-2xx; socket errors timeout=2")


def test_a_section_is_replaced_and_the_others_kept(tmp_path: Path) -> None:
    results = tmp_path / "RESULTS.md"
    results.write_text("# Title\n\n## A\n\nold a\n\n## B\n\nb\n")
    report.replace_section("## A\n\nnew a\n", results)
    report.replace_section("## C\n\nc\n", results)
    assert results.read_text() == "# Title\n\n## A\n\nnew a\n\n## B\n\nb\n\n## C\n\nc\n"


async def test_inbox_rows_are_paired_with_their_runs_by_message_sid(tmp_path: Path) -> None:
    start = dt.datetime(2026, 1, 1, 12, 0, 0, tzinfo=dt.UTC)
    with sqlite3.connect(tmp_path / "switchboard.db") as db:
        db.execute("create table inbox_events (trigger text, dedupe_key text, received_at text)")
        db.execute("create table runs (idempotency_key text, created_at text)")
        for n, (received_ms, created_ms) in enumerate([(0, 12), (5, 45), (-500, 0), (10, None)]):
            received = (start + dt.timedelta(milliseconds=received_ms)).replace(tzinfo=None)
            sid = events.twilio_sid(n)
            db.execute("insert into inbox_events values ('whatsapp', ?, ?)", (sid, received))
            if created_ms is not None:
                created = (start + dt.timedelta(milliseconds=created_ms)).replace(tzinfo=None)
                db.execute("insert into runs values (?, ?)", (f"whatsapp:{sid}", created))
    events_since, samples = await inbox_latency.latencies(Store("sqlite", tmp_path), start)
    # The warm-up's row (received before the start) is left out; the last has no run yet.
    assert events_since == 3
    assert sorted(samples) == [12.0, 40.0]
