"""The durable inbox on both databases: accepts, order per conversation, crashes, retries,
suspend/resume/discard and replay, driven through the real writer, queue, store and processor."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import pytest
from sqlalchemy import select

from core.clock import SystemClock
from core.db import Database
from core.errors import BadRequest, NotFound
from core.inbox import AcceptedEvent, EventStatus
from core.models import RunRequest
from dispatch.tables import runs
from tests.integration.inbox_helpers import (
    InboxNode,
    ManualClock,
    RunPerMessage,
    event,
    event_rows,
    run_bodies,
    wait_for_status,
)

pytestmark = pytest.mark.usefixtures("default_owner")


@pytest.fixture
async def node(database: Database) -> AsyncIterator[InboxNode]:
    started = InboxNode(database, ManualClock(), triggers=("test", "other"))
    started.commit.start()
    yield started
    await started.commit.aclose()


async def test_a_dedupe_key_seen_in_the_batch_or_stored_answers_the_first_event(
    node: InboxNode,
) -> None:
    answers = await node.intake.write_with_events(
        [event("one", dedupe="d1"), event("one again", dedupe="d1"), event("two")]
    )
    first, twin, other = answers
    assert isinstance(first, AcceptedEvent) and isinstance(other, AcceptedEvent)
    assert twin == AcceptedEvent(first.id, duplicate=True, held=False)
    assert other.id != first.id and not first.duplicate and not other.duplicate
    retried = await node.accept(event("one, retried", dedupe="d1"))
    assert retried.id == first.id and retried.duplicate
    rows = await event_rows(node.database)
    assert [json.loads(row["body"])["text"] for row in rows] == ["one", "two"]
    assert rows[0]["headers"] == {"x-test": "1"} and rows[0]["status"] == EventStatus.PENDING


async def test_concurrent_accepts_of_one_key_on_two_nodes_store_one_event(
    database_url: str, database: Database
) -> None:
    other_db = Database(database_url)
    nodes = [InboxNode(database, ManualClock()), InboxNode(other_db, ManualClock())]
    for each in nodes:
        each.commit.start()
    try:
        answers = await asyncio.gather(
            *(each.accept(event(f"copy {i}", dedupe="same")) for i in range(10) for each in nodes)
        )
    finally:
        for each in nodes:
            await each.commit.aclose()
        await other_db.dispose()
    assert len({answer.id for answer in answers}) == 1
    assert sum(not answer.duplicate for answer in answers) == 1
    assert len(await event_rows(database)) == 1


async def test_one_event_per_conversation_at_a_time_in_arrival_order_keys_in_parallel(
    node: InboxNode,
) -> None:
    for text, key in [("a1", "A"), ("a2", "A"), ("b1", "B"), ("a3", "A"), ("b2", "B")]:
        await node.accept(event(text, key=key))
    channel = RunPerMessage()
    b1_started = asyncio.Event()

    async def interleave(text: str) -> None:
        if text == "b1":
            b1_started.set()
        if text == "a1":  # waits for B's first event: both conversations in flight at once
            await b1_started.wait()

    channel.hook = interleave
    async with AsyncExitStack() as stack:
        await node.processor({"test": channel}, owner="node-a").start(stack)
        last = (await event_rows(node.database))[-1]
        await wait_for_status(node, last["id"], EventStatus.PROCESSED)
        for row in await event_rows(node.database):
            await wait_for_status(node, row["id"], EventStatus.PROCESSED)
    assert channel.overlaps == []
    assert [t for t in channel.seen if t.startswith("a")] == ["a1", "a2", "a3"]
    assert [t for t in channel.seen if t.startswith("b")] == ["b1", "b2"]
    made = await run_bodies(node.database)
    assert [t for t in made if t.startswith("a")] == ["a1", "a2", "a3"]
    assert sorted(made) == ["a1", "a2", "a3", "b1", "b2"]


async def test_only_the_first_unfinished_event_of_a_key_is_claimed(node: InboxNode) -> None:
    a1, a2, b1 = [
        await node.accept(event(text, key=key))
        for text, key in [("a1", "A"), ("a2", "A"), ("b1", "B")]
    ]
    claimed = await node.queue.claim("node-a", {"test"}, 10)
    assert [e.id for e in claimed] == [a1.id, b1.id]
    assert await node.queue.claim("node-b", {"test"}, 10) == []  # leased, and a2 waits for a1
    [finished] = await node.queue.finish("node-a", [(claimed[0], [])])
    assert finished.status is EventStatus.PROCESSED  # type: ignore[union-attr]
    assert [e.id for e in await node.queue.claim("node-b", {"test"}, 10)] == [a2.id]


async def test_a_failing_event_is_retried_then_failed_and_its_conversation_goes_on(
    database: Database,
) -> None:
    node = InboxNode(database, SystemClock(), max_attempts=3, retry_delay=0.01)
    node.commit.start()
    channel = RunPerMessage()
    channel.fail = lambda text: text == "bad"
    try:
        bad = await node.accept(event("bad"))
        good = await node.accept(event("good"))
        async with AsyncExitStack() as stack:
            await node.processor({"test": channel}, owner="node-a").start(stack)
            await wait_for_status(node, good.id, EventStatus.PROCESSED)
    finally:
        await node.commit.aclose()
    [failed] = [row for row in await event_rows(database) if row["id"] == bad.id]
    assert failed["status"] == EventStatus.FAILED and failed["attempts"] == 3
    assert "RuntimeError: cannot process bad" in failed["error"]
    assert channel.seen == ["bad", "bad", "bad", "good"]  # good waited for bad's last attempt
    assert await run_bodies(database) == ["good"]
    health = {h.name: h for h in await node.store.triggers()}["test"]
    assert health.counts["failed"] == 1 and health.counts["processed"] == 1
    assert health.last_error is not None and "cannot process bad" in health.last_error
    assert health.last_error_at is not None and health.backlog == 0


async def test_the_runs_and_the_processed_mark_are_committed_together(database: Database) -> None:
    node = InboxNode(database, SystemClock(), max_attempts=2, retry_delay=0.01)
    node.commit.start()
    channel = RunPerMessage()
    # The second run request of "half" cannot be written (no such owner): the first must not be.
    channel.more_requests = lambda text: (
        [RunRequest(owner_id="nobody", service_id="echo", body="{}")] if text == "half" else []
    )
    try:
        half = await node.accept(event("half", key="A"))
        whole = await node.accept(event("whole", key="B"))
        async with AsyncExitStack() as stack:
            await node.processor({"test": channel}, owner="node-a").start(stack)
            row = await wait_for_status(node, half.id, EventStatus.FAILED)
            await wait_for_status(node, whole.id, EventStatus.PROCESSED)
    finally:
        await node.commit.aclose()
    assert row["attempts"] == 2 and row["run_ids"] is None
    assert await run_bodies(database) == ["whole"]


async def stalled_processor(
    node: InboxNode, stack: AsyncExitStack
) -> tuple[RunPerMessage, asyncio.Event]:
    """A processor of ``node`` (owner ``node-a``) whose channel has begun its first event and
    holds every event until the returned gate opens."""
    stalled = RunPerMessage()
    stalled.gate = gate = asyncio.Event()
    await node.processor({"test": stalled}, owner="node-a").start(stack)
    async with asyncio.timeout(5):
        await stalled.started.wait()
    return stalled, gate


async def test_a_processor_stopped_mid_way_hands_back_its_event_and_it_runs_once(
    node: InboxNode,
) -> None:
    accepted = await node.accept(event("hello"))
    async with AsyncExitStack() as stack:
        await stalled_processor(node, stack)  # never let go: the node stops while processing
    [row] = await event_rows(node.database)
    assert row["status"] == EventStatus.PENDING and row["lease_owner"] is None
    assert row["attempts"] == 0  # a graceful hand-back is not an attempt
    again = RunPerMessage()
    async with AsyncExitStack() as stack:
        await node.processor({"test": again}, owner="node-b").start(stack)
        await wait_for_status(node, accepted.id, EventStatus.PROCESSED)
    assert await run_bodies(node.database) == ["hello"]


async def test_an_expired_lease_is_taken_over_by_another_node_and_makes_one_run(
    database_url: str, database: Database
) -> None:
    clock = ManualClock()
    other_db = Database(database_url)
    first, second = InboxNode(database, clock), InboxNode(other_db, clock)
    first.commit.start()
    try:
        # No dedupe key, so no idempotency key: only the lease keeps this to one run.
        accepted = await first.accept(event("hello"))
        async with AsyncExitStack() as stack:
            stalled, gate = await stalled_processor(first, stack)
            clock.advance(first.lease_seconds + 1)  # node A stops renewing, as if it died
            async with AsyncExitStack() as other:
                await second.processor({"test": RunPerMessage()}, owner="node-b").start(other)
                row = await wait_for_status(second, accepted.id, EventStatus.PROCESSED)
            stalled.done.clear()
            gate.set()  # node A wakes up and finishes too late
            async with asyncio.timeout(5):
                await stalled.done.wait()
    finally:
        await first.commit.aclose()
        await other_db.dispose()
    assert row["attempts"] == 1 and "processor stopped" in row["error"]
    assert await run_bodies(database) == ["hello"]
    [final] = await event_rows(database)
    assert final["status"] == EventStatus.PROCESSED and final["run_ids"] == row["run_ids"]


async def test_a_node_does_not_start_again_an_event_whose_lease_it_let_expire(
    node: InboxNode,
) -> None:
    # Its renewals failed (the clock passed the lease): the event may go to another node, but
    # this one, still processing it, must not start it a second time (the cause of a flaky
    # takeover test: node A re-took its own event before node B could).
    clock = node.clock
    assert isinstance(clock, ManualClock)
    first = await node.accept(event("hello"))
    async with AsyncExitStack() as stack:
        stalled, gate = await stalled_processor(node, stack)
        stalled.started.clear()
        clock.advance(node.lease_seconds + 1)
        await node.accept(event("other", key="chat-2"))  # wakes the claim loop
        async with asyncio.timeout(5):
            await stalled.started.wait()
        assert stalled.seen == ["hello", "other"]
        gate.set()
        await wait_for_status(node, first.id, EventStatus.PROCESSED)
    assert sorted(await run_bodies(node.database)) == ["hello", "other"]


async def test_suspend_holds_events_and_resume_processes_them_in_order(node: InboxNode) -> None:
    health = await node.store.suspend("test")
    assert health.state == "suspended"
    held = [await node.accept(event(f"m{i}", dedupe=f"d{i}")) for i in range(3)]
    assert all(answer.held and not answer.duplicate for answer in held)
    retried = await node.accept(event("m0", dedupe="d0"))
    assert retried.duplicate and retried.held and retried.id == held[0].id
    assert await node.queue.claim("node-a", {"test"}, 10) == []  # held: nothing to process
    health = {h.name: h for h in await node.store.triggers()}["test"]
    assert health.counts["held"] == 3 and health.backlog == 3
    channel = RunPerMessage()
    async with AsyncExitStack() as stack:
        await node.processor({"test": channel}, owner="node-a").start(stack)
        resumed = await node.store.resume("test")
        assert resumed.state == "active"
        for answer in held:
            await wait_for_status(node, answer.id, EventStatus.PROCESSED)
    assert channel.seen == ["m0", "m1", "m2"]
    assert await run_bodies(node.database) == ["m0", "m1", "m2"]


async def test_discard_marks_the_held_events_discarded_and_counts_them(node: InboxNode) -> None:
    await node.store.suspend("test")
    for i in range(3):
        await node.accept(event(f"m{i}"))
    assert await node.store.discard("test") == 3
    assert await node.store.discard("test") == 0
    await node.store.resume("test")
    assert {row["status"] for row in await event_rows(node.database)} == {EventStatus.DISCARDED}
    health = {h.name: h for h in await node.store.triggers()}["test"]
    assert health.counts["discarded"] == 3 and health.backlog == 0 and health.state == "active"
    with pytest.raises(NotFound, match="trigger 'nope'"):
        await node.store.discard("nope")


async def test_a_replay_makes_a_second_run_recorded_as_a_replay(node: InboxNode) -> None:
    original = await node.accept(event("hello", dedupe="d1"))
    async with AsyncExitStack() as stack:
        await node.processor({"test": RunPerMessage()}, owner="node-a").start(stack)
        first = await wait_for_status(node, original.id, EventStatus.PROCESSED)
        replayed = await node.store.replay(original.id)
        again = await node.store.replay(original.id)
    assert len(replayed) == 1 and replayed != first["run_ids"] and again != replayed
    async with node.database.read() as conn:
        keys = dict((await conn.execute(select(runs.c.id, runs.c.idempotency_key))).all())
    assert len(keys) == 3 and keys[first["run_ids"][0]] == "run:d1"
    copies = [row for row in await event_rows(node.database) if row["replay_of"] == original.id]
    assert len(copies) == 2 and all(row["dedupe_key"] is None for row in copies)
    assert keys[replayed[0]] == f"run:d1:replay:{copies[0]['id']}"
    info = await node.store.event(copies[0]["id"], include_body=True)
    assert info.replay_of == original.id and info.run_ids == replayed and info.body is not None
    with pytest.raises(NotFound):
        await node.store.replay("evt_missing")


async def test_events_are_listed_newest_first_page_by_page(node: InboxNode) -> None:
    ids = [(await node.accept(event(f"m{i}", key=f"k{i}"))).id for i in range(5)]
    page, cursor = await node.store.events(
        trigger="test", status=None, limit=2, cursor=None, include_body=False
    )
    seen = [info.id for info in page]
    assert page[0].body is None and page[0].headers is None
    while cursor is not None:
        page, cursor = await node.store.events(
            trigger=None, status=EventStatus.PENDING, limit=2, cursor=cursor, include_body=True
        )
        seen += [info.id for info in page]
        assert all(info.body is not None for info in page)
    assert seen == ids[::-1]
    empty, _ = await node.store.events(
        trigger="other", status=None, limit=10, cursor=None, include_body=False
    )
    assert empty == []
    with pytest.raises(BadRequest, match="cursor"):
        await node.store.events(
            trigger=None, status=None, limit=2, cursor="garbage", include_body=False
        )
    with pytest.raises(BadRequest, match="limit"):
        await node.store.events(trigger=None, status=None, limit=0, cursor=None, include_body=False)
    with pytest.raises(NotFound, match="trigger"):
        await node.store.events(
            trigger="nope", status=None, limit=2, cursor=None, include_body=False
        )
    names = [health.name for health in await node.store.triggers()]
    assert names == ["other", "test"]
