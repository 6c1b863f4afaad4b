"""Schedules on a live server: schedule_runs through codewords-client, REST, pause/resume/run-now,
overlap policies, misfire policies after an outage, delivery to a webhook receiver."""

from __future__ import annotations

import itertools
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from codewords_client import AsyncCodewordsClient
from sqlalchemy import select

from core.models import RunRecord, RunStatus
from dispatch.tables import runs
from scheduler.engine import ScheduleEngine
from scheduler.models import MisfirePolicy, ScheduleSpec
from scheduler.service import ScheduleService
from scheduler.ticks import SCHEDULED_REQUEST_HEADER
from tests.conftest import Live, LiveFactory
from tests.integration.deliveries import Receiver, wait_for_delivery
from tests.integration.schedule_helpers import (
    EVERY_SECOND,
    FixedClock,
    eventually,
    live_node,
    schedule_runs,
)
from triggers.webhook import webhook_signature


def client(live: Live) -> AsyncCodewordsClient:
    return AsyncCodewordsClient(base_url=live.url, api_key=live.key)


async def test_workflow_schedules_a_workflow_through_schedule_runs(live: Live) -> None:
    await live.register("env_dump")
    await live.register("caller")
    async with client(live) as codewords:
        response = await codewords.run(
            "caller",
            {
                "service_id": "schedule_runs",
                "inputs": {
                    "service_id": "env-dump",
                    "cron_expression": EVERY_SECOND,
                    "input_data": {"city": "Lisbon"},
                },
            },
        )
        assert response.status_code == 200, response.text
        created = response.json()["inner"]
    schedule_id = created["id"]
    assert created["owner_id"] == "default"
    assert created["cron"] == EVERY_SECOND

    async def two_done() -> list[RunRecord] | None:
        done = [r for r in await schedule_runs(live, schedule_id) if r.finished]
        return done if len(done) >= 2 else None

    first = (await eventually(two_done, "two scheduled runs", timeout=60))[0]
    assert first.source.value == "schedule"
    assert first.status == RunStatus.COMPLETED, first.error
    assert json.loads(first.request_body or "null") == {"city": "Lisbon"}
    tick = (first.context or {})[SCHEDULED_REQUEST_HEADER]
    assert tick.startswith(f"{schedule_id}:")
    # The workflow itself received the header (env-dump echoes the headers it got).
    seen = json.loads(first.response_body or b"null")
    assert seen["headers"][SCHEDULED_REQUEST_HEADER] == tick
    assert seen["headers"]["X-Request-Id"] == first.id

    async with client(live) as codewords:
        listed = (await codewords.run("schedule_runs", {"action": "list"})).json()
        assert [s["id"] for s in listed["schedules"]] == [schedule_id]
        preview = await codewords.run(
            "schedule_runs", {"action": "preview", "schedule_id": schedule_id, "count": 3}
        )
        assert len(preview.json()["fire_times"]) == 3
        with pytest.raises(httpx.HTTPStatusError) as refused:
            await codewords.run(
                "schedule_runs", {"service_id": "env-dump", "cron_expression": "0 25 * * *"}
            )
        assert refused.value.response.status_code == 400
        assert "bad hour field '25'" in str(refused.value)
        await codewords.run("schedule_runs", {"action": "delete", "schedule_id": schedule_id})
    # Another owner does not see the schedule.
    other = await live.key_for("other")
    async with AsyncCodewordsClient(base_url=live.url, api_key=other) as codewords:
        assert (await codewords.run("schedule_runs", {"action": "list"})).json() == {
            "schedules": []
        }


async def test_pause_resume_and_run_now_over_rest(live: Live) -> None:
    headers = {"Authorization": f"Bearer {live.key}"}
    node = live_node(live)
    async with httpx.AsyncClient(base_url=live.url, headers=headers) as http:
        created = await http.post(
            "/schedules",
            json={"id": "tick", "service_id": "echo", "cron": EVERY_SECOND, "inputs": {"n": 1}},
        )
        assert created.status_code == 201, created.text

        async def fired() -> int:
            return len(await schedule_runs(live, "tick"))

        await eventually(fired, "a tick")
        paused = (await http.post("/schedules/tick/pause")).json()
        assert paused["paused"] is True
        assert paused["next_fire_at"] is None

        async def unscheduled() -> bool:
            engine = node.engine
            return engine is not None and engine.job_count == 0

        await eventually(unscheduled, "the job removed by the leader")
        # A paused schedule can still be run by hand.
        before = await fired()
        started = await http.post("/schedules/tick/run-now")
        assert started.status_code == 202
        run_id = started.json()["request_id"]
        record = await live.services.gateway.wait_until_finished(run_id, 10)
        assert record is not None and record.status == RunStatus.COMPLETED
        assert ":manual:" in (record.context or {})[SCHEDULED_REQUEST_HEADER]
        assert await fired() == before + 1

        async def scheduled_ticks_only() -> bool:
            # A run by hand is not a fired tick (fire state is recorded in batches: wait).
            return bool((await http.get("/schedules/tick")).json()["fired_count"] == before)

        await eventually(scheduled_ticks_only, "fired_count without the manual run")

        resumed = (await http.post("/schedules/tick/resume")).json()
        assert resumed["paused"] is False
        await eventually(lambda: _more_than(fired, before + 1), "ticks after resume")

        async def counted_after_resume() -> dict[str, Any] | None:
            # The leader records fire state in batches: wait for the tick after the resume.
            shown: dict[str, Any] = (await http.get("/schedules/tick")).json()
            return shown if shown["fired_count"] > before else None

        shown = await eventually(counted_after_resume, "the tick after resume counted")
        assert shown["recent_runs"][0]["request_id"]
        assert (await http.get("/schedules/nope")).status_code == 404
        assert (await http.delete("/schedules/tick")).status_code == 200
        assert (await http.get("/schedules")).json() == {"schedules": []}
    async with httpx.AsyncClient(base_url=live.url) as anonymous:
        assert (await anonymous.get("/schedules")).status_code == 401


async def _more_than(count: Callable[[], Awaitable[int]], floor: int) -> bool:
    return await count() > floor


async def test_overlap_policies(live: Live) -> None:
    await live.register("slow")
    service = live.services.schedules
    for policy in ("skip", "queue", "allow"):
        await service.create(
            "default",
            ScheduleSpec(
                id=f"overlap-{policy}",
                service_id="slow",
                cron=EVERY_SECOND,
                inputs={"seconds": 2.5},
                overlap_policy=policy,  # type: ignore[arg-type]
            ),
        )

    async def three_each() -> bool:
        counts = [len(await schedule_runs(live, f"overlap-{p}")) for p in ("queue", "allow")]
        skipped = (await service.get(None, "overlap-skip")).skipped_count
        return min(counts) >= 3 and skipped >= 2

    await eventually(three_each, "ticks under every overlap policy", timeout=30)
    for policy in ("skip", "queue", "allow"):
        await service.pause(None, f"overlap-{policy}")
    skip_runs = await schedule_runs(live, "overlap-skip")
    # skip: no new run while the previous one is unfinished.
    for earlier, later in itertools.pairwise(skip_runs):
        finished = await live.services.gateway.wait_until_finished(earlier.id, 10)
        assert finished is not None and finished.completed_at is not None
        assert later.created_at >= finished.completed_at
    # queue: every tick makes a run, one at a time in order (serial key of the schedule).
    queued = await schedule_runs(live, "overlap-queue")
    assert {r.serial_key for r in queued} == {"schedule:default/overlap-queue"}
    # allow: runs overlap freely.
    allowed = await schedule_runs(live, "overlap-allow")
    assert {r.serial_key for r in allowed} == {None}
    running = [r for r in allowed if r.started_at and not r.finished]
    queued_running = [
        r for r in await schedule_runs(live, "overlap-queue") if r.status == "running"
    ]
    assert len(queued_running) <= 1
    assert running or len(allowed) >= 3


async def test_misfire_policies_after_an_outage(live_factory: LiveFactory) -> None:
    live = await live_factory.start(roles=["web", "worker"])  # no leader of its own
    outage_start = datetime(2030, 1, 1, 0, 0, tzinfo=UTC)
    clock = FixedClock(outage_start)
    service = ScheduleService(
        live.services.schedules.store,
        live.services.gateway,
        clock,
        ensure_owner=live.services.keys.ensure_owner,
    )
    grace = timedelta(days=2, hours=12).total_seconds()
    for policy in MisfirePolicy:
        await service.create(
            "default",
            ScheduleSpec(
                id=f"misfire-{policy.value}",
                service_id="echo",
                cron="0 12 * * *",
                misfire_policy=policy,
                misfire_grace=grace,
            ),
        )
    # The scheduler comes back on 5 January at 13:00: five noon ticks passed (1st to 5th).
    clock.moment = datetime(2030, 1, 5, 13, 0, tzinfo=UTC)
    engine = ScheduleEngine(live.services.schedules.store, live.services.gateway, clock)
    await engine.start()
    expected = {
        MisfirePolicy.SKIP: ([], 5),
        MisfirePolicy.RUN_ONCE: ([5], 4),
        MisfirePolicy.RUN_ALL: ([3, 4, 5], 2),
    }
    try:
        for policy, (days, missed) in expected.items():
            schedule_id = f"misfire-{policy.value}"
            keys = {f"schedule:default/{schedule_id}:2030-01-0{d}T12:00:00.000000Z" for d in days}

            async def caught_up(
                schedule_id: str = schedule_id, keys: set[str] = keys, missed: int = missed
            ) -> bool:
                made = await schedule_runs(live, schedule_id)
                state = await service.get(None, schedule_id)
                return (
                    len(made) == len(keys)
                    and state.missed_count == missed
                    and state.fired_count == len(keys)
                )

            await eventually(caught_up, f"catch-up under {policy.value}")
            async with live.services.database.read() as conn:
                made_keys = set(
                    (
                        await conn.execute(
                            select(runs.c.idempotency_key).where(
                                runs.c.idempotency_key.startswith(
                                    f"schedule:default/{schedule_id}:"
                                )
                            )
                        )
                    ).scalars()
                )
            assert made_keys == keys
            state = await service.get(None, schedule_id)
            assert state.last_fire_at == datetime(2030, 1, 5, 12, tzinfo=UTC)
            assert state.next_fire_at == datetime(2030, 1, 6, 12, tzinfo=UTC)
    finally:
        await engine.aclose()


async def test_scheduled_output_is_delivered_to_a_webhook(live: Live, receiver: Receiver) -> None:
    receiver.failures_left = 1  # the first attempt gets a 503: retried
    await live.services.schedules.create(
        "default",
        ScheduleSpec(
            id="to-webhook",
            service_id="echo",
            cron=EVERY_SECOND,
            inputs={"reply": "good morning"},
            deliver_to=f"webhook:{receiver.url}",
        ),
    )

    async def one_run() -> list[RunRecord] | None:
        return await schedule_runs(live, "to-webhook") or None

    run = (await eventually(one_run, "a scheduled run"))[0]
    await live.services.schedules.pause(None, "to-webhook")
    delivery = await wait_for_delivery(live, run.id, "sent")
    assert delivery["channel"] == "webhook"
    assert delivery["attempts"] == 2
    mine = [
        (headers, body)
        for headers, body in receiver.received
        if json.loads(body)["request_id"] == run.id
    ]
    assert len(mine) == 2  # the 503, then the accepted retry
    headers, body = mine[-1]
    record = json.loads(body)
    assert record["source"] == "schedule"
    assert record["responseJson"] == {"reply": "good morning"}
    # The receiver can check the signature with the delivery secret.
    secret = live.services.signer.sign("webhook-secret").encode()
    expected = webhook_signature(secret, headers["X-Switchboard-Timestamp"], body)
    assert headers["X-Switchboard-Signature"] == expected
    assert mine[0][0]["Idempotency-Key"] == headers["Idempotency-Key"]  # one delivery, retried


async def test_config_schedules_are_created_then_updated_by_id(live_factory: LiveFactory) -> None:
    entry = {
        "id": "nightly",
        "service_id": "echo",
        "cron": "0 3 * * *",
        "timezone": "Europe/London",
    }
    live = await live_factory.start(schedules=[entry])  # type: ignore[arg-type]
    first = await live.services.schedules.get(None, "nightly")
    assert (first.cron, first.timezone, first.owner_id) == ("0 3 * * *", "Europe/London", "default")
    changed = await live.services.schedules.apply_config(
        "default", [ScheduleSpec.model_validate({**entry, "cron": "0 4 * * *"})]
    )
    assert changed == ["nightly"]
    assert (await live.services.schedules.get(None, "nightly")).cron == "0 4 * * *"
    unchanged = await live.services.schedules.apply_config(
        "default", [ScheduleSpec.model_validate({**entry, "cron": "0 4 * * *"})]
    )
    assert unchanged == []
