"""Retention on both databases: what goes by age and by count, and what always stays."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select

from core.db import Database
from core.inbox import EventStatus, Ignored
from core.models import Outcome, RunRequest, SubmittedRun
from dispatch.queue import RunQueue
from dispatch.retention import Retention
from dispatch.settings import InboxSettings, RuntimeSettings
from dispatch.tables import deliveries, run_logs, runs
from tests.integration.inbox_helpers import InboxNode, ManualClock, event, event_rows
from triggers.whatsapp.tables import whatsapp_messages

DONE = Outcome.from_response(200, b"{}", "application/json")


pytestmark = pytest.mark.usefixtures("default_owner")


def retention(
    db: Database,
    clock: ManualClock,
    runtime: RuntimeSettings | None = None,
    inbox: InboxSettings | None = None,
) -> Retention:
    """Retention by the documented defaults, or by the sections given."""
    return Retention(db, clock, runtime or RuntimeSettings(), inbox or InboxSettings())


class Runs:
    """Runs made through the real intake and queue, finished or not."""

    def __init__(self, node: InboxNode, clock: ManualClock) -> None:
        self.node = node
        self.queue = RunQueue(
            node.database, clock, lease_seconds=30, max_attempts=3, per_workflow_limit=100
        )

    async def submit(self, name: str) -> str:
        [submitted] = await self.node.intake.write(
            [RunRequest(owner_id="default", service_id="echo", body="{}", path=name)]
        )
        assert isinstance(submitted, SubmittedRun)
        return submitted.id

    async def finished(self, name: str, *, reply: str | None = None) -> str:
        """A completed run; ``reply`` gives it a delivery in that status."""
        run_id = await self.submit(name)
        claimed = await self.queue.claim("worker", 100)
        for other in claimed:  # older unfinished runs stay unfinished
            if other.id != run_id:
                await self.queue.release("worker", other.id)
        assert run_id in {run.id for run in claimed}

        def row(now: Any) -> dict[str, Any] | None:
            if reply is None:
                return None
            return {
                "run_id": run_id,
                "channel": "whatsapp",
                "target": {"address": "+1555"},
                "target_key": "whatsapp:+1555",
                "payload": {"text": "hi"},
                "status": reply,
                "attempts": 0,
                "next_attempt_at": now,
                "created_at": now,
                "updated_at": now,
            }

        assert await self.queue.complete("worker", run_id, DONE, row)
        return run_id


async def remaining_runs(db: Database) -> set[str]:
    async with db.read() as conn:
        return {str(path) for (path,) in await conn.execute(select(runs.c.path))}


async def count(db: Database, table: Any) -> int:
    async with db.read() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())


async def test_old_finished_runs_go_with_their_logs_and_sent_replies(database: Database) -> None:
    clock = ManualClock()
    node = InboxNode(database, clock)
    made = Runs(node, clock)
    await made.finished("done")
    sent = await made.finished("sent", reply="sent")
    await made.finished("reply-waiting", reply="pending")
    async with database.write() as conn:
        [delivery_id] = (
            await conn.execute(select(deliveries.c.id).where(deliveries.c.run_id == sent))
        ).scalars()
        await conn.execute(
            run_logs.insert().values(
                run_id=sent, created_at=clock.now(), stream="stdout", message="hello"
            )
        )
        await conn.execute(
            whatsapp_messages.insert().values(
                sid="SM1",
                delivery_id=delivery_id,
                part=0,
                status="delivered",
                status_rank=3,
                created_at=clock.now(),
                updated_at=clock.now(),
            )
        )
    running = await made.submit("running")
    [claimed] = await made.queue.claim("worker", 1)
    assert claimed.id == running
    await made.submit("queued")
    clock.advance(15 * 86400)
    await made.finished("new")
    pruned = await retention(database, clock).prune()
    assert pruned.runs == 2
    assert await remaining_runs(database) == {"reply-waiting", "running", "queued", "new"}
    assert await count(database, run_logs) == 0
    assert await count(database, whatsapp_messages) == 0
    assert await count(database, deliveries) == 1  # the reply still waiting to go out


async def test_finished_runs_beyond_the_count_go_unless_they_are_young(database: Database) -> None:
    clock = ManualClock()
    made = Runs(InboxNode(database, clock), clock)
    for i in range(5):
        await made.finished(f"old-{i}")
        clock.advance(1)
    await made.submit("queued")
    clock.advance(7200)
    await made.finished("young")
    await retention(database, clock, RuntimeSettings(runs_max_count=2)).prune()
    assert await remaining_runs(database) == {"old-4", "young", "queued"}
    for i in range(3):
        await made.finished(f"fresh-{i}")
    await retention(database, clock, RuntimeSettings(runs_max_count=1)).prune()
    assert await remaining_runs(database) == {"young", "queued", "fresh-0", "fresh-1", "fresh-2"}


async def test_finished_events_lose_their_payload_then_go_pending_and_held_stay(
    database: Database,
) -> None:
    clock = ManualClock()
    node = InboxNode(database, clock)
    node.commit.start()
    try:
        processed = await node.accept(event("processed", key="A"))
        ignored = await node.accept(event("ignore me", key="B"))
        waiting = await node.accept(event("waiting", key="A"))
        await node.store.suspend("test")
        held = await node.accept(event("held", key="C"))
    finally:
        await node.commit.aclose()
    claimed = await node.queue.claim("node-a", {"test"}, 10)
    by_id = {e.id: e for e in claimed}
    await node.queue.finish(
        "node-a", [(by_id[processed.id], []), (by_id[ignored.id], Ignored("a bot"))]
    )
    await node.queue.release("node-a", [waiting.id])
    clock.advance(8 * 86400)
    pruned = await retention(database, clock).prune()
    assert (pruned.bodies, pruned.events) == (2, 0)
    rows = {row["id"]: row for row in await event_rows(database)}
    assert rows[processed.id]["body"] is None and rows[ignored.id]["body"] is None
    assert rows[waiting.id]["body"] is not None and rows[held.id]["body"] is not None
    with pytest.raises(Exception, match="payload"):
        await node.store.replay(processed.id)
    clock.advance(7 * 86400)
    pruned = await retention(database, clock).prune()
    assert pruned.events == 2
    statuses = {row["id"]: row["status"] for row in await event_rows(database)}
    assert statuses == {waiting.id: EventStatus.PENDING, held.id: EventStatus.HELD}


async def test_finished_events_beyond_the_count_go_unless_they_are_young(
    database: Database,
) -> None:
    clock = ManualClock()
    node = InboxNode(database, clock)
    node.commit.start()
    try:
        ids = [(await node.accept(event(f"m{i}", key=f"k{i}"))).id for i in range(4)]
        claimed = await node.queue.claim("node-a", {"test"}, 10)
        await node.queue.finish("node-a", [(e, []) for e in claimed])
        clock.advance(7200)
        young = (await node.accept(event("young", key="y"))).id
        [claimed_young] = await node.queue.claim("node-a", {"test"}, 10)
        await node.queue.finish("node-a", [(claimed_young, [])])
    finally:
        await node.commit.aclose()
    await retention(database, clock, inbox=InboxSettings(max_count=2)).prune()
    assert [row["id"] for row in await event_rows(database)] == [ids[3], young]
    # Beyond the count, but younger than min_age: a provider's retry must still find it.
    keep_young = RuntimeSettings(retention_min_age=3 * 3600)
    await retention(database, clock, keep_young, InboxSettings(max_count=1)).prune()
    assert [row["id"] for row in await event_rows(database)] == [ids[3], young]
