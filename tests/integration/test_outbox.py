"""Replies leave through the outbox: once, signed, retried, and never lost across a restart."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from functools import partial

import httpx
from sqlalchemy import update

from core.addresses import DestinationPolicy
from core.models import Outcome, ReplyTarget, RunRequest, RunStatus
from core.ports import NullMetrics
from dispatch.outbox import Outbox, OutboxSettings
from dispatch.tables import deliveries
from tests.conftest import Live, LiveFactory
from tests.integration.deliveries import Receiver, delivery_rows, wait_for_delivery
from triggers.webhook import WebhookSender, webhook_signature

LOOPBACK = DestinationPolicy.allowing(["127.0.0.1"])


async def submit_to_webhook(live: Live, url: str, service: str, body: object) -> str:
    submitted = await live.services.gateway.submit(
        RunRequest(
            owner_id="default",
            service_id=service,
            body=json.dumps(body),
            reply_target=ReplyTarget(channel="webhook", address=url),
        )
    )
    return submitted.id


async def test_reply_is_posted_once_and_signed(live: Live, receiver: Receiver) -> None:
    run_id = await submit_to_webhook(live, receiver.url, "echo", {"text": "hello"})
    row = await wait_for_delivery(live, run_id, "sent")
    assert row["attempts"] == 1
    [(headers, body)] = receiver.received
    record = json.loads(body)
    assert record["request_id"] == run_id and record["responseJson"] == {"text": "hello"}
    assert record["status"] == "completed"
    secret = live.services.signer.sign("webhook-secret").encode()
    expected = webhook_signature(secret, headers["X-Switchboard-Timestamp"], body)
    assert headers["X-Switchboard-Signature"] == expected
    assert headers["Idempotency-Key"] == f"switchboard-delivery-{row['id']}"


async def test_unavailable_receiver_is_retried_until_it_answers(
    live: Live, receiver: Receiver
) -> None:
    receiver.failures_left = 2
    run_id = await submit_to_webhook(live, receiver.url, "echo", {"n": 1})
    row = await wait_for_delivery(live, run_id, "sent")
    assert row["attempts"] == 3
    assert len(receiver.received) == 3


async def test_failed_run_still_replies_with_a_line_naming_it(
    live_factory: LiveFactory, receiver: Receiver
) -> None:
    live = await live_factory.start(runtime={"run_timeout": 1})
    await live.register("slow")
    run_id = await submit_to_webhook(live, receiver.url, "slow", {"seconds": 10})
    row = await wait_for_delivery(live, run_id, "sent")
    payload = row["payload"]
    assert isinstance(payload, dict)
    assert payload["reply"]["failed"] is True and run_id in payload["reply"]["text"]
    assert json.loads(receiver.received[0][1])["status"] == "timed_out"


async def test_channel_without_a_sender_fails_visibly(live: Live) -> None:
    submitted = await live.services.gateway.submit(
        RunRequest(
            owner_id="default",
            service_id="echo",
            body="{}",
            reply_target=ReplyTarget(channel="whatsapp", address="whatsapp:+15550001"),
        )
    )
    row = await wait_for_delivery(live, submitted.id, "failed")
    assert "no sender is configured for channel 'whatsapp'" in str(row["last_error"])


async def test_reply_recorded_before_a_restart_is_sent_once_after_it(
    live_factory: LiveFactory, receiver: Receiver
) -> None:
    # A node that serves but neither executes nor delivers: we complete the run by hand, as a
    # worker would, and "crash" before any outbox drained.
    live = await live_factory.start(roles={"web"})
    services = live.services
    submitted = await services.gateway.submit(
        RunRequest(
            owner_id="default",
            service_id="echo",
            body='"hi"',
            reply_target=ReplyTarget(channel="webhook", address=receiver.url),
        )
    )
    [run] = await services.queue.claim("worker-a", 1)
    done = Outcome.from_response(200, b'"hi"', "application/json")
    assert await services.queue.complete(
        "worker-a", run.id, done, lambda now: services.replies.row(run, done, now)
    )
    assert receiver.received == []
    # After the restart, two outboxes (two nodes) drain the same database: the reply goes once.
    async with httpx.AsyncClient() as http:
        first, second = (
            Outbox(
                services.database,
                services.clock,
                {"webhook": WebhookSender(http, b"k" * 32, services.clock, LOOPBACK)},
                NullMetrics(),
                OutboxSettings(),
            )
            for _ in range(2)
        )
        attempted = await asyncio.gather(first.drain_once(), second.drain_once())
        assert sorted(attempted) == [0, 1]
        assert await first.drain_once() == 0
    assert len(receiver.received) == 1
    assert json.loads(receiver.received[0][1])["request_id"] == submitted.id
    record = await services.queue.get(submitted.id)
    assert record is not None and record.status == RunStatus.COMPLETED


async def test_replies_to_one_target_stay_in_order_while_the_first_is_retried(
    live_factory: LiveFactory, receiver: Receiver
) -> None:
    live = await live_factory.start(roles={"web"})
    services = live.services
    run_ids = []
    for n in range(3):
        submitted = await services.gateway.submit(
            RunRequest(
                owner_id="default",
                service_id="echo",
                body=json.dumps({"n": n}),
                reply_target=ReplyTarget(channel="webhook", address=receiver.url),
            )
        )
        [run] = await services.queue.claim("worker-a", 1)
        done = Outcome.from_response(200, json.dumps({"n": n}).encode(), "application/json")
        assert await services.queue.complete(
            "worker-a",
            run.id,
            done,
            partial(services.replies.row, run, done),
        )
        run_ids.append(submitted.id)
    receiver.failures_left = 2  # the first reply fails twice (Retry-After: 0)
    async with httpx.AsyncClient() as http:
        outbox = Outbox(
            services.database,
            services.clock,
            {"webhook": WebhookSender(http, b"k" * 32, services.clock, LOOPBACK)},
            NullMetrics(),
            OutboxSettings(),
        )
        for _ in range(20):
            if len(receiver.received) == 5:
                break
            assert await outbox.drain_once() <= 1  # one target: one delivery at a time
    attempted = [json.loads(body)["request_id"] for _, body in receiver.received]
    assert attempted == [run_ids[0], run_ids[0], run_ids[0], run_ids[1], run_ids[2]]


async def completed_webhook_reply(live: Live, url: str) -> str:
    """A run completed by hand (as a worker would) whose reply now waits in the outbox."""
    services = live.services
    submitted = await services.gateway.submit(
        RunRequest(
            owner_id="default",
            service_id="echo",
            body='"hi"',
            reply_target=ReplyTarget(channel="webhook", address=url),
        )
    )
    [run] = await services.queue.claim("worker-a", 1)
    done = Outcome.from_response(200, b'"hi"', "application/json")
    assert await services.queue.complete(
        "worker-a", run.id, done, partial(services.replies.row, run, done)
    )
    return submitted.id


def webhook_outbox(live: Live, http: httpx.AsyncClient, lease_seconds: float) -> Outbox:
    services = live.services
    return Outbox(
        services.database,
        services.clock,
        {"webhook": WebhookSender(http, b"k" * 32, services.clock, LOOPBACK)},
        NullMetrics(),
        OutboxSettings(lease_seconds=lease_seconds),
    )


async def test_a_send_longer_than_the_lease_keeps_it(
    live_factory: LiveFactory, receiver: Receiver
) -> None:
    live = await live_factory.start(roles={"web"})
    run_id = await completed_webhook_reply(live, receiver.url)
    gate = asyncio.Event()
    receiver.gates.append(gate)
    async with httpx.AsyncClient() as http:
        slow, other = webhook_outbox(live, http, 0.3), webhook_outbox(live, http, 0.3)
        sending = asyncio.ensure_future(slow.drain_once())
        async with asyncio.timeout(10):
            await receiver.arrived.wait()
            [row] = await delivery_rows(live)
            claimed_until = row["lease_expires_at"]
            while row["lease_expires_at"] < claimed_until + timedelta(seconds=0.6):
                await asyncio.sleep(0.05)  # polling the database: nothing to subscribe to
                [row] = await delivery_rows(live)
            # Well past the first lease: the other node still finds it leased.
            assert await other.drain_once() == 0
        gate.set()
        assert await sending == 1
    row = await wait_for_delivery(live, run_id, "sent")
    assert row["attempts"] == 1 and len(receiver.received) == 1


async def test_an_attempt_that_lost_its_lease_does_not_record_its_result(
    live_factory: LiveFactory, receiver: Receiver
) -> None:
    live = await live_factory.start(roles={"web"})
    run_id = await completed_webhook_reply(live, receiver.url)
    stalled_gate, second_gate = asyncio.Event(), asyncio.Event()
    receiver.gates.extend([stalled_gate, second_gate])
    async with httpx.AsyncClient() as http:
        stalled, second = webhook_outbox(live, http, 60), webhook_outbox(live, http, 60)
        stalled_send = asyncio.ensure_future(stalled.drain_once())
        async with asyncio.timeout(10):
            await receiver.arrived.wait()
        # The first drainer stalls past its lease (as if paused): the next one takes over.
        async with live.services.database.write() as conn:
            await conn.execute(
                update(deliveries).values(
                    lease_expires_at=live.services.clock.now() - timedelta(seconds=1)
                )
            )
        second_send = asyncio.ensure_future(second.drain_once())
        async with asyncio.timeout(10):
            await receiver.wait_for(2)
            stalled_gate.set()
            assert await stalled_send == 1
        [row] = await delivery_rows(live)
        assert (row["status"], row["attempts"]) == ("sending", 2)  # the stale result was dropped
        second_gate.set()
        assert await second_send == 1
    row = await wait_for_delivery(live, run_id, "sent")
    assert row["attempts"] == 2
