"""Fair claiming (README "Fair claiming"): who waits for whom, on both databases, not timed."""

from __future__ import annotations

import pytest

from core.db import Database
from core.models import Outcome, ReplyTarget, RunRequest, RunStatus, Source
from dispatch.intake import ClaimedHere, IntakeWriter, LocalRun
from dispatch.queue import Completion, RunQueue
from tests.integration.test_queue import ManualClock
from triggers.auth import KeyStore

OWNERS = ("alice", "bob", "default")


@pytest.fixture
async def owners(database: Database) -> None:
    for owner in OWNERS:
        await KeyStore(database, ManualClock()).ensure_owner(owner)


pytestmark = pytest.mark.usefixtures("owners")


def queue_of(
    db: Database, clock: ManualClock, *, workflows: int = 100, owners: int = 3
) -> RunQueue:
    return RunQueue(
        db,
        clock,
        lease_seconds=30,
        max_attempts=3,
        per_workflow_limit=workflows,
        per_owner_limit=owners,
    )


def run(owner: str, source: Source = Source.API, service: str = "echo") -> RunRequest:
    target = ReplyTarget(channel="none") if source is Source.SCHEDULE else None
    return RunRequest(
        owner_id=owner, service_id=service, body="{}", source=source, reply_target=target
    )


async def test_one_owners_burst_does_not_hold_back_another_owners_run(
    database: Database,
) -> None:
    clock = ManualClock()
    queue = queue_of(database, clock, owners=3)
    writer = IntakeWriter(database, clock)
    burst = await writer.write([run("alice") for _ in range(200)])
    [late] = await writer.write([run("bob")])
    claimed = await queue.claim("worker", 8)
    owners = [record.owner_id for record in claimed]
    # The rule: an owner holds at most per_owner_limit workers; a run of another owner is
    # claimed by the first claim with a free worker, however many runs the first one queued.
    assert owners.count("alice") == 3
    assert [r.id for r in claimed if r.owner_id == "bob"] == [getattr(late, "id", None)]
    assert len(burst) == 200
    assert await queue.claim("worker", 8) == []  # alice at her limit, bob's one run taken


async def test_a_schedule_tick_is_claimed_ahead_of_a_queued_api_burst(
    database: Database,
) -> None:
    clock = ManualClock()
    queue = queue_of(database, clock, owners=50)
    writer = IntakeWriter(database, clock)
    await writer.write([run("default") for _ in range(100)])
    [tick] = await writer.write([run("default", Source.SCHEDULE)])
    [first] = await queue.claim("worker", 1)
    assert first.id == getattr(tick, "id", None) and first.source is Source.SCHEDULE
    [second] = await queue.claim("worker", 1)
    assert second.source is Source.API  # then the API runs, oldest first


async def test_a_waited_run_is_leased_in_its_intake_within_the_limits(
    database: Database,
) -> None:
    clock = ManualClock()
    queue = queue_of(database, clock, workflows=1)
    writer = IntakeWriter(database, clock, claims=queue)
    first, second = await writer.write_batch(
        [LocalRun(run("alice"), "worker"), LocalRun(run("bob"), "worker")]
    )
    assert isinstance(first, ClaimedHere)
    assert first.run.status is RunStatus.RUNNING and first.run.started_at is not None
    assert first.run.attempts == 1
    assert not isinstance(second, ClaimedHere)  # echo is at its limit of 1: queued as usual
    stored = await queue.get(getattr(second, "id", ""))
    assert stored is not None and stored.status is RunStatus.QUEUED
    assert await queue.claim("other", 5) == []  # the lease holds; the limit holds


async def test_ends_and_the_next_claims_share_one_transaction(database: Database) -> None:
    clock = ManualClock()
    queue = queue_of(database, clock, workflows=1)
    writer = IntakeWriter(database, clock)
    await writer.write([run("alice"), run("alice")])
    [first] = await queue.claim("worker", 2)
    line = {"run_id": first.id, "created_at": clock.now(), "stream": "stdout", "message": "hi"}
    done = Outcome.from_response(200, b"{}", "application/json")
    [finished], claimed, _ = await queue.complete_many(
        "worker", [Completion(first.id, done, logs=[line])], claim=2
    )
    assert finished is not None and finished.status is RunStatus.COMPLETED
    assert [r.status for r in claimed] == [RunStatus.RUNNING]  # the one the end let start
    assert claimed[0].id != first.id
    assert claimed[0].started_at is not None and finished.completed_at is not None
    assert claimed[0].started_at >= finished.completed_at
    [lost], _, _ = await queue.complete_many("other", [Completion(claimed[0].id, done)])
    assert lost is None  # not this worker's lease: nothing recorded
