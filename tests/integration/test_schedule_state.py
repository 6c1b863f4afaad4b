"""A schedule's fire state on both databases: it never moves back, a new leader refreshes it,
misfires count from a real ``last_fire_at``, a tick that cannot be submitted is counted missed,
a run-now holds back ticks under overlap ``skip`` (and is no fired tick), and two nodes applying
the same ``[[schedules]]`` at once both start."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from core.models import RunRecord, RunRequest, SubmittedRun
from dispatch.tables import runs
from scheduler.engine import ScheduleEngine
from scheduler.models import MisfirePolicy, OverlapPolicy, ScheduleSpec
from scheduler.service import ScheduleService
from scheduler.store import TickRecord
from tests.conftest import Live, LiveFactory
from tests.integration.schedule_helpers import (
    EVERY_SECOND,
    FixedClock,
    eventually,
    live_node,
    schedule_runs,
)

NOON = "0 12 * * *"


def at(day: int, hour: int = 12, second: int = 0) -> datetime:
    return datetime(2030, 1, day, hour, 0, second, tzinfo=UTC)


@pytest.fixture
async def standalone(live_factory: LiveFactory) -> Live:
    """A server without a leader of its own: the tests drive engines with their own clock."""
    return await live_factory.start(roles=["web", "worker"])


def service_at(live: Live, clock: FixedClock) -> ScheduleService:
    return ScheduleService(
        live.services.schedules.store,
        live.services.gateway,
        clock,
        ensure_owner=live.services.keys.ensure_owner,
    )


async def run_keys(live: Live, schedule_id: str) -> set[str]:
    async with live.services.database.read() as conn:
        return set(
            (
                await conn.execute(
                    select(runs.c.idempotency_key).where(
                        runs.c.idempotency_key.startswith(f"schedule:default/{schedule_id}:")
                    )
                )
            ).scalars()
        )


async def test_recorded_fire_state_never_moves_back(standalone: Live) -> None:
    store = standalone.services.schedules.store
    await service_at(standalone, FixedClock(at(1, 0))).create(
        "default", ScheduleSpec(id="state", service_id="echo", cron=NOON)
    )
    await store.record(
        [TickRecord("state", "default", last_fire_at=at(10), next_fire_at=at(11), fired=1)]
    )
    # A run_all catch-up of older ticks, flushed after the newer live tick.
    await store.record(
        [TickRecord("state", "default", last_fire_at=at(3), next_fire_at=at(4), fired=1)]
    )
    state = await store.get("state", None)
    assert (state.last_fire_at, state.next_fire_at, state.fired_count) == (at(10), at(11), 2)
    # A record as new as the stored one moves it on; one without a fire time (a leader adopting
    # the schedule) refreshes the next fire time only.
    await store.record([TickRecord("state", "default", last_fire_at=at(11), next_fire_at=at(12))])
    await store.record([TickRecord("state", "default", next_fire_at=at(12, 13))])
    state = await store.get("state", None)
    assert (state.last_fire_at, state.next_fire_at) == (at(11), at(12, 13))


async def test_misfires_count_from_the_last_recorded_fire(standalone: Live) -> None:
    """The first engine really fires the 1 January noon tick; after an outage the next one
    counts what passed since that fire, not since the schedule was created."""
    clock = FixedClock(datetime(2029, 12, 31, 13, tzinfo=UTC))
    service = service_at(standalone, clock)
    for policy in (MisfirePolicy.SKIP, MisfirePolicy.RUN_ALL):
        await service.create(
            "default",
            ScheduleSpec(
                id=f"since-{policy.value}",
                service_id="echo",
                cron=NOON,
                misfire_policy=policy,
                misfire_grace=timedelta(days=2, hours=12).total_seconds(),
            ),
        )
    store = standalone.services.schedules.store
    # A stale next fire time, as a dead leader could leave it: a new leader refreshes it even
    # when no tick is due.
    await store.record([TickRecord("since-skip", "default", next_fire_at=at(9))])
    clock.moment = datetime(2029, 12, 31, 14, tzinfo=UTC)
    idle = ScheduleEngine(store, standalone.services.gateway, clock)
    await idle.start()
    try:

        async def refreshed() -> bool:
            return (await store.get("since-skip", None)).next_fire_at == at(1)

        await eventually(refreshed, "the next fire time refreshed by the new leader")
    finally:
        await idle.aclose()
    clock.moment = at(1, 12, 1)  # one second after the noon tick: on time
    first = ScheduleEngine(store, standalone.services.gateway, clock)
    await first.start()
    try:

        async def fired_once() -> bool:
            states = [await store.get(f"since-{p}", None) for p in ("skip", "run_all")]
            return all(s.fired_count == 1 and s.last_fire_at == at(1) for s in states)

        await eventually(fired_once, "the 1 January tick fired by the first engine")
    finally:
        await first.aclose()
    assert (await store.get("since-skip", None)).next_fire_at == at(2)
    assert (await store.get("since-skip", None)).missed_count == 0

    clock.moment = at(5, 13)  # back after the ticks of the 2nd to the 5th
    second = ScheduleEngine(store, standalone.services.gateway, clock)
    await second.start()
    try:

        async def caught_up() -> bool:
            skip = await store.get("since-skip", None)
            run_all = await store.get("since-run_all", None)
            return (skip.missed_count, run_all.fired_count, run_all.missed_count) == (4, 4, 1)

        await eventually(caught_up, "the outage counted from the recorded fire")
    finally:
        await second.aclose()
    tick = "schedule:default/since-{}:2030-01-0{}T12:00:00.000000Z"
    assert await run_keys(standalone, "since-skip") == {tick.format("skip", 1)}
    assert await run_keys(standalone, "since-run_all") == {
        tick.format("run_all", day) for day in (1, 3, 4, 5)
    }
    for schedule_id in ("since-skip", "since-run_all"):
        state = await store.get(schedule_id, None)
        assert (state.last_fire_at, state.next_fire_at) == (at(5), at(6))


class UnreachableQueue:
    """The real gateway, except that every submit fails (an injected database outage)."""

    def __init__(self, live: Live) -> None:
        self._gateway = live.services.gateway
        self.attempts = 0

    async def submit(self, request: RunRequest, *, waited: bool = False) -> SubmittedRun:
        self.attempts += 1
        raise ConnectionError("injected: the database is unreachable")

    async def get(self, run_id: str) -> RunRecord | None:
        return await self._gateway.get(run_id)

    def __getattr__(self, name: str) -> object:
        return getattr(self._gateway, name)


async def test_a_tick_that_cannot_be_submitted_is_counted_missed(
    standalone: Live, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FixedClock(at(1, 0))
    await service_at(standalone, clock).create(
        "default", ScheduleSpec(id="unlucky", service_id="echo", cron=NOON)
    )
    clock.moment = at(1, 12, 1)
    queue = UnreachableQueue(standalone)
    store = standalone.services.schedules.store
    engine = ScheduleEngine(store, queue, clock, submit_backoff=0.01)  # type: ignore[arg-type]
    caplog.set_level(logging.ERROR, logger="scheduler.engine")
    await engine.start()
    try:

        async def counted() -> bool:
            return (await store.get("unlucky", None)).missed_count == 1

        await eventually(counted, "the tick counted as missed")
    finally:
        await engine.aclose()
    assert queue.attempts == 5
    state = await store.get("unlucky", None)
    assert (state.fired_count, state.last_fire_at, state.next_fire_at) == (0, at(1), at(2))
    assert await run_keys(standalone, "unlucky") == set()
    [logged] = [r for r in caplog.records if "missed" in r.getMessage()]
    assert "unlucky" in logged.getMessage() and "2030-01-01T12:00:00" in logged.getMessage()


async def test_run_now_holds_back_ticks_under_overlap_skip_and_is_no_fired_tick(
    live: Live,
) -> None:
    await live.register("slow")
    service = live.services.schedules
    node = live_node(live)
    await service.create(
        "default",
        ScheduleSpec(
            id="manual-first",
            service_id="slow",
            cron="0 0 1 1 *",  # the leader adopts it, nothing fires yet
            inputs={"seconds": 3},
            overlap_policy=OverlapPolicy.SKIP,
        ),
    )

    async def adopted() -> bool:
        return node.engine is not None and node.engine.job_count == 1

    await eventually(adopted, "the schedule adopted by the leader")
    manual_id = await service.run_now(None, "manual-first")
    assert (await service.get(None, "manual-first")).fired_count == 0
    # Every second from now on: the ticks must not start while the manual run is unfinished.
    await service.update(None, "manual-first", {"cron": EVERY_SECOND})

    async def a_scheduled_run() -> list[RunRecord] | None:
        made = [r for r in await schedule_runs(live, "manual-first") if r.id != manual_id]
        return made or None

    scheduled = await eventually(a_scheduled_run, "a tick after the manual run", timeout=30)
    await service.pause(None, "manual-first")
    manual = await live.services.gateway.wait_until_finished(manual_id, 10)
    assert manual is not None and manual.completed_at is not None
    assert all(run.created_at >= manual.completed_at for run in scheduled)

    async def counted() -> bool:
        # The leader records fire state in batches: wait for the counts to settle.
        state = await service.get(None, "manual-first")
        made = [r for r in await schedule_runs(live, "manual-first") if r.id != manual_id]
        # The manual run is not a fired tick; the ticks during it were skipped.
        return state.fired_count == len(made) and state.skipped_count >= 1

    await eventually(counted, "fired and skipped counts without the manual run")


async def test_two_nodes_applying_the_same_config_at_once_both_start(standalone: Live) -> None:
    spec = ScheduleSpec(id="nightly", service_id="echo", cron="0 3 * * *", timezone="Europe/Paris")
    # Two nodes' first start: the owner and the schedule do not exist yet.
    results = await asyncio.gather(
        standalone.services.schedules.apply_config("config-team", [spec]),
        standalone.services.schedules.apply_config("config-team", [spec]),
    )
    assert sorted(results) == [[], ["nightly"]]
    [stored] = await standalone.services.schedules.list_schedules("config-team")
    assert (stored.id, stored.cron, stored.timezone) == ("nightly", "0 3 * * *", "Europe/Paris")
    # A node started with a changed file updates it, also when it loses the race to create it.
    changed = ScheduleSpec.model_validate({**spec.model_dump(), "cron": "0 4 * * *"})
    again = await asyncio.gather(
        standalone.services.schedules.apply_config("config-team", [changed]),
        standalone.services.schedules.apply_config("config-team", [changed]),
    )
    assert ["nightly"] in again
    assert (await standalone.services.schedules.get(None, "nightly")).cron == "0 4 * * *"
