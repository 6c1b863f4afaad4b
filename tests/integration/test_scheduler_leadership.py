"""One leader per database (SQLite: ``flock`` on a file next to it; PostgreSQL: an advisory
lock): two nodes on one database, only one leads, the other takes over when it steps down. And
jitter on a live leader: each tick fires between its fire time and its fire time + jitter."""

from __future__ import annotations

import asyncio
import contextlib

from core.clock import SystemClock, parse_iso
from scheduler.engine import jitter_delay
from scheduler.leadership import FileLock, leadership_for
from scheduler.models import ScheduleSpec
from scheduler.node import SchedulerNode
from scheduler.settings import SchedulerSettings
from tests.conftest import Live, LiveFactory
from tests.integration.schedule_helpers import EVERY_SECOND, eventually, schedule_runs

FAST = SchedulerSettings(standby_retry=0.05, poll_interval=0.1)


async def test_two_nodes_on_one_database_take_turns_leading(live_factory: LiveFactory) -> None:
    live = await live_factory.start(roles=["web", "worker"])  # no node of its own
    services = live.services
    nodes = [
        SchedulerNode(
            leadership_for(services.database),
            services.schedules.store,
            services.gateway,
            SystemClock(),
            FAST,
        )
        for _ in range(2)
    ]
    async with contextlib.AsyncExitStack() as stack:  # closes each node (again) at the end
        for node in nodes:
            await node.start(stack)
        waits = [asyncio.create_task(node.leading.wait()) for node in nodes]
        await asyncio.wait(waits, timeout=10, return_when=asyncio.FIRST_COMPLETED)
        for wait in waits:
            wait.cancel()
        await asyncio.gather(*waits, return_exceptions=True)
        first, second = nodes if nodes[0].leading.is_set() else reversed(nodes)
        assert first.leading.is_set() and not second.leading.is_set()
        # The lock is held: a third contender (another process would be the same) cannot take it.
        probe = leadership_for(services.database)
        assert not await probe.try_acquire()
        assert not second.leading.is_set()

        await first.aclose()  # steps down and releases the lock
        async with asyncio.timeout(10):
            await second.leading.wait()
        assert not first.leading.is_set()
        assert not await probe.try_acquire()
        await second.aclose()
        assert await probe.try_acquire()  # released at step-down, not held by a dead node
        await probe.release()


async def test_file_lock_excludes_a_second_holder_until_released(live: Live) -> None:
    path = live.settings.server.data_dir / "probe.scheduler.lock"
    first, second = FileLock(live.services.database, path), FileLock(live.services.database, path)
    assert await first.try_acquire()
    assert not await second.try_acquire()
    await first.release()
    assert await second.try_acquire()
    assert not await first.try_acquire()
    await second.release()


async def test_jitter_delays_each_tick_within_its_bound(live: Live) -> None:
    jitter = 0.8
    await live.services.schedules.create(
        "default",
        ScheduleSpec(id="jittery", service_id="echo", cron=EVERY_SECOND, jitter=jitter),
    )

    async def four_ticks() -> bool:
        return len(await schedule_runs(live, "jittery")) >= 4

    await eventually(four_ticks, "four jittered ticks")
    await live.services.schedules.pause(None, "jittery")
    delays: list[float] = []
    for run in await schedule_runs(live, "jittery"):
        tick = parse_iso((run.context or {})["X-Scheduled-Request-Id"].split(":", 1)[1])
        lag = (run.created_at - tick).total_seconds()
        delay = jitter_delay("jittery", tick, jitter)
        # Never before its fire time + its own delay, which is within [0, jitter]; after it by
        # no more than the cost of a submit (generous: the test machine is shared).
        assert 0 <= delay <= jitter and delay <= lag <= delay + 1.0, (tick, delay, lag)
        delays.append(delay)
    assert len(set(delays)) == len(delays)  # a delay per tick, not one for all
