"""The run queue's state machine on both databases, with a hand-driven clock."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from core.db import Database
from core.models import Outcome, ReplyTarget, RunRequest, RunStatus, Source, SubmittedRun
from dispatch.batching import GroupCommit
from dispatch.intake import IntakeItem, IntakeWriter, NewHusk
from dispatch.queue import RunQueue
from switchboard.migrate import downgrade, upgrade
from triggers.auth import KeyStore


class ManualClock:
    def __init__(self) -> None:
        self.moment = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)

    def now(self) -> datetime:
        return self.moment

    def advance(self, seconds: float) -> None:
        self.moment += timedelta(seconds=seconds)


pytestmark = pytest.mark.usefixtures("default_owner")


def make_queue(db: Database, clock: ManualClock, *, per_workflow_limit: int = 10) -> RunQueue:
    return RunQueue(
        db, clock, lease_seconds=30, max_attempts=3, per_workflow_limit=per_workflow_limit
    )


def request(service: str = "echo", **fields: str) -> RunRequest:
    return RunRequest(owner_id="default", service_id=service, body="{}", **fields)  # type: ignore[arg-type]


async def submit(writer: IntakeWriter, *items: IntakeItem) -> list[object]:
    results = await writer.write(list(items))
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return list(results)


async def test_expired_lease_is_claimed_again_and_completes_exactly_once(
    database: Database,
) -> None:
    clock = ManualClock()
    queue = make_queue(database, clock)
    writer = IntakeWriter(database, clock)
    await submit(writer, request())
    [first] = await queue.claim("worker-a", 5)
    assert first.attempts == 1 and first.status == RunStatus.RUNNING
    assert await queue.claim("worker-b", 5) == []  # leased: nobody else gets it
    clock.advance(31)  # worker-a died: its lease runs out
    [again] = await queue.claim("worker-b", 5)
    assert again.id == first.id and again.attempts == 2
    done = Outcome.from_response(200, b'{"ok": true}', "application/json")
    assert await queue.complete("worker-a", first.id, done) is False  # the dead worker lost it
    assert await queue.complete("worker-b", first.id, done) is True
    assert await queue.complete("worker-b", first.id, done) is False  # completes once
    record = await queue.get(first.id)
    assert record is not None and record.status == RunStatus.COMPLETED and record.attempts == 2


async def test_renewed_lease_is_kept(database: Database) -> None:
    clock = ManualClock()
    queue = make_queue(database, clock)
    writer = IntakeWriter(database, clock)
    await submit(writer, request())
    [run] = await queue.claim("worker-a", 1)
    clock.advance(20)
    assert await queue.renew("worker-a", [run.id]) == {run.id}
    clock.advance(20)
    assert await queue.claim("worker-b", 1) == []
    assert await queue.renew("worker-b", [run.id]) == set()


async def test_run_is_given_up_after_max_attempts(database: Database) -> None:
    clock = ManualClock()
    queue = make_queue(database, clock)
    writer = IntakeWriter(database, clock)
    await submit(writer, request())
    for attempt in range(3):
        claimed = await queue.claim(f"worker-{attempt}", 1)
        assert len(claimed) == 1
        clock.advance(31)
    assert await queue.claim("worker-x", 1) == []
    [record] = await queue.list_runs()
    assert record.status == RunStatus.FAILED
    assert "gave up after 3 attempts" in (record.error or "")


async def test_per_workflow_limit_is_enforced_at_claim(database: Database) -> None:
    clock = ManualClock()
    queue = make_queue(database, clock, per_workflow_limit=2)
    writer = IntakeWriter(database, clock)
    await submit(writer, *(request("slow") for _ in range(5)), request("echo"))
    claimed = await queue.claim("worker-a", 10)
    services = sorted(run.service_id for run in claimed)
    assert services == ["echo", "slow", "slow"]
    assert await queue.claim("worker-b", 10) == []


async def test_runs_sharing_a_serial_key_run_one_at_a_time_in_arrival_order(
    database: Database,
) -> None:
    clock = ManualClock()
    queue = make_queue(database, clock)
    writer = IntakeWriter(database, clock)
    # One batch (one commit, one timestamp) still keeps arrival order within a chat.
    results = await submit(
        writer,
        request(serial_key="chat:alice"),
        request(serial_key="chat:bob"),
        request(serial_key="chat:alice"),
        request(serial_key="chat:alice"),
        request(),
    )
    alice = [result.id for result in results[0:1] + results[2:4]]  # type: ignore[attr-defined]
    first_claim = await queue.claim("worker-a", 10)
    assert {run.serial_key for run in first_claim} == {"chat:alice", "chat:bob", None}
    assert [run.id for run in first_claim if run.serial_key == "chat:alice"] == alice[:1]
    assert await queue.claim("worker-b", 10) == []  # alice's next waits for her first
    done = Outcome.from_response(200, b"{}", "application/json")
    order = [alice[0]]
    for _ in range(2):
        assert await queue.complete("worker-a", order[-1], done)
        [following] = await queue.claim("worker-a", 10)
        order.append(following.id)
    assert order == alice
    clock.advance(31)  # a worker dies holding alice's last run: it is the one retried, alone
    reclaimed = await queue.claim("worker-b", 10)
    [retried] = [run for run in reclaimed if run.serial_key == "chat:alice"]
    assert retried.id == alice[-1] and retried.attempts == 2


async def test_a_long_backlog_of_one_chat_or_workflow_does_not_hold_back_the_others(
    database: Database,
) -> None:
    clock = ManualClock()
    queue = make_queue(database, clock, per_workflow_limit=2)
    writer = IntakeWriter(database, clock)
    await submit(writer, *(request(serial_key="chat:busy") for _ in range(60)))
    await submit(writer, *(request("slow") for _ in range(60)))
    clock.advance(1)
    [late_chat, late_run] = await submit(writer, request(serial_key="chat:quiet"), request("fast"))
    # The chat's backlog never takes room among the candidates: only its first run can go.
    # A workflow at its limit takes none once its runs are running: the next claim (workers
    # claim again while they have room) reaches the runs behind the backlog.
    claimed = await queue.claim("worker-a", 10) + await queue.claim("worker-a", 10)
    ids = {run.id for run in claimed}
    assert late_chat.id in ids and late_run.id in ids  # type: ignore[attr-defined]
    assert sum(run.serial_key == "chat:busy" for run in claimed) == 1
    assert sum(run.service_id == "slow" for run in claimed) == 2


async def test_release_hands_the_run_back_without_counting_the_attempt(database: Database) -> None:
    clock = ManualClock()
    queue = make_queue(database, clock)
    writer = IntakeWriter(database, clock)
    await submit(writer, request())
    [run] = await queue.claim("worker-a", 1)
    await queue.release("worker-a", run.id)
    [again] = await queue.claim("worker-b", 1)
    assert again.id == run.id and again.attempts == 1


async def test_claims_are_oldest_first(database: Database) -> None:
    clock = ManualClock()
    queue = make_queue(database, clock)
    writer = IntakeWriter(database, clock)
    ids = []
    for _ in range(3):
        [record] = await submit(writer, request())
        ids.append(record.id)  # type: ignore[attr-defined]
        clock.advance(1)
    claimed = await queue.claim("worker-a", 3)
    assert [run.id for run in claimed] == ids


async def test_idempotency_key_in_one_batch_and_across_batches(database: Database) -> None:
    clock = ManualClock()
    queue = make_queue(database, clock)
    writer = IntakeWriter(database, clock)
    first = await submit(writer, request(idempotency_key="k1"), request(idempotency_key="k1"))
    later = await submit(writer, request(idempotency_key="k1"), request(idempotency_key="k2"))
    ids = {result.id for result in [*first, *later[:1]]}  # type: ignore[attr-defined]
    assert len(ids) == 1
    assert len(await queue.list_runs()) == 2


async def test_group_commit_batches_concurrent_submits(database: Database) -> None:
    clock = ManualClock()
    queue = make_queue(database, clock)
    writer = IntakeWriter(database, clock)
    batches: list[int] = []

    async def counting(items: list[IntakeItem]) -> list[SubmittedRun | str | BaseException]:
        batches.append(len(items))
        return await writer.write(items)

    commit: GroupCommit[IntakeItem, SubmittedRun | str] = GroupCommit(counting, name="test")
    commit.start()
    results = await asyncio.gather(*(commit.submit(request()) for _ in range(200)))
    await commit.aclose()
    assert len({result.id for result in results}) == 200  # type: ignore[union-attr]
    assert sum(batches) == 200 and len(batches) < 200
    assert len(await queue.list_runs(limit=500)) == 200


async def test_one_bad_item_fails_alone(database: Database) -> None:
    writer = IntakeWriter(database, ManualClock())
    [husk] = await submit(writer, NewHusk(owner_id="default", caller_id=None))
    results = await writer.write(
        [
            request(provisioned_run_id="req_missing"),
            request(provisioned_run_id=str(husk)),
            request(provisioned_run_id=str(husk)),
        ]
    )
    assert isinstance(results[0], LookupError)
    assert not isinstance(results[1], BaseException)
    assert isinstance(results[2], Exception) and "already started" in str(results[2])


async def test_migrations_downgrade_and_upgrade_again(database: Database) -> None:
    await downgrade(database, "base")
    await upgrade(database)
    await KeyStore(database, ManualClock()).ensure_owner("default")
    clock = ManualClock()
    queue = make_queue(database, clock)
    writer = IntakeWriter(database, clock)
    await submit(writer, request())
    assert len(await queue.list_runs()) == 1


async def test_intake_rows_read_back_exactly(database: Database) -> None:
    clock = ManualClock()
    clock.moment = clock.moment.replace(microsecond=123456)
    queue = make_queue(database, clock)
    writer = IntakeWriter(database, clock)
    target = ReplyTarget(channel="slack", address="C1", thread_id="1700000000.000100")
    [submitted] = await submit(
        writer,
        RunRequest(
            owner_id="default",
            service_id="echo",
            path="sub/path",
            body='{"n": 1}',
            source=Source.SLACK,
            reply_target=target,
            context={"X-Scheduled-Request-Id": "s1"},
            correlation_id="corr",
        ),
    )
    record = await queue.get(submitted.id)  # type: ignore[attr-defined]
    assert record is not None
    assert record.created_at == clock.moment and record.queued_at == clock.moment
    assert record.reply_target == target.model_dump(mode="json")
    assert record.context == {"X-Scheduled-Request-Id": "s1"}
    assert (record.source, record.path, record.correlation_id) == (Source.SLACK, "sub/path", "corr")
    assert record.status == RunStatus.QUEUED and record.request_body == '{"n": 1}'
    [claimed] = await queue.claim("worker-a", 1)  # stored timestamps compare with bound ones
    assert claimed.id == record.id
