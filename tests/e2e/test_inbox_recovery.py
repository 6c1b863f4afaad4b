"""An accepted event outlives a SIGKILLed server: exactly one run and one reply after restart.

Both windows are made real without timing: between the inbox commit and processing, a node with
only the ``web`` role accepts the message (nothing on it processes); while processing and before
the run's commit, the fake Twilio API holds the message's media download open until the node
that started it is dead.
"""

from __future__ import annotations

import signal

import pytest

from tests.e2e.harness import Service, wait_until
from tests.e2e.whatsapp import (
    USER,
    inbox_events,
    message,
    post_signed,
    whatsapp_runs,
    write_config,
)
from tests.fakes.twilio_api import SANDBOX_NUMBER, FakeTwilioApi

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


async def test_an_event_committed_but_not_processed_runs_once_after_a_kill(
    service: Service, twilio: FakeTwilioApi
) -> None:
    config = write_config(service, twilio)
    web = await service.start_ready("--config", str(config), "--role", "web")
    params = message("are you there?")
    answer = await post_signed(web, params)
    assert answer.status_code == 200, answer.text  # acked: the event is committed
    [stored] = await inbox_events(service, config)
    assert (stored["status"], stored["attempts"], stored["run_ids"]) == ("pending", 0, [])
    assert stored["dedupe_key"] == f"whatsapp:{params['MessageSid']}"

    web.signal(signal.SIGKILL)
    assert await web.wait_exit(10) == -signal.SIGKILL
    assert twilio.messages == [] and await whatsapp_runs(service, config) == []

    node = await service.start_ready("--config", str(config))
    [sent] = await twilio.wait_for(1, timeout=60)
    assert (sent.sender, sent.to, sent.body) == (SANDBOX_NUMBER, USER, "are you there?")

    async def processed() -> dict[str, object] | None:
        [event] = await inbox_events(service, config)
        return event if event["status"] == "processed" else None

    event = await wait_until(processed, 30, "the inbox event to be processed")
    [run] = await whatsapp_runs(service, config)
    assert event["run_ids"] == [run[0]] and event["attempts"] == 0
    assert run[2] == "completed", run
    # The node is still up and has nothing left to do: the one reply stays one.
    assert (await node.health()) is not None
    assert len(twilio.messages) == 1 and twilio.attempts == 1


async def test_an_event_killed_while_processing_runs_once_after_restart(
    service: Service, twilio: FakeTwilioApi
) -> None:
    config = write_config(service, twilio, lease_seconds=2)
    first = await service.start_ready("--config", str(config))
    gate = twilio.hold_media()
    picture = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
    params = message(
        "look at this",
        NumMedia="1",
        MessageType="image",
        MediaUrl0=twilio.add_media(picture, "image/png"),
        MediaContentType0="image/png",
    )
    assert (await post_signed(first, params)).status_code == 200
    # Processing has begun (the download is its first step) and cannot reach the run's commit.
    await twilio.wait_for_media_fetches(1, timeout=30)

    first.signal(signal.SIGKILL)
    assert await first.wait_exit(10) == -signal.SIGKILL
    gate.set()
    [held] = await inbox_events(service, config)
    assert (held["status"], held["run_ids"]) == ("pending", [])
    assert await whatsapp_runs(service, config) == []

    await service.start_ready("--config", str(config))  # takes the event once the lease expires
    [sent] = await twilio.wait_for(1, timeout=60)
    assert sent.body == "look at this"

    async def processed() -> dict[str, object] | None:
        [event] = await inbox_events(service, config)
        return event if event["status"] == "processed" else None

    event = await wait_until(processed, 30, "the inbox event to be processed")
    [run] = await whatsapp_runs(service, config)
    assert event["run_ids"] == [run[0]], (event, run)
    assert event["attempts"] == 1, "the killed node's processing counts as one attempt"
    assert "its processor stopped" in str(event["error"]), event
    downloads = [path for path in twilio.media_fetches if path.startswith("/2010-04-01/")]
    assert len(downloads) == 2, twilio.media_fetches
    assert len(twilio.messages) == 1 and twilio.attempts == 1
