"""``switchboard triggers …`` on the real store, next to a running server with WhatsApp on.

The commands run in their own processes on the server's database: a suspend there makes the
server's edge store new messages held (and still acknowledge them), a resume makes its inbox
processor take them, in arrival order.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import Service, wait_until
from tests.e2e.test_cli import row
from tests.e2e.whatsapp import inbox_events, message, post_signed, whatsapp_runs, write_config
from tests.fakes.twilio_api import FakeTwilioApi

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


async def triggers(service: Service, config: Path, *args: str) -> str:
    """``switchboard triggers <args>``'s output (it must succeed)."""
    return (await service.cli("triggers", *args, "--config", str(config))).stdout


async def statuses(service: Service, config: Path) -> list[str]:
    """The inbox events' statuses, oldest first."""
    return [event["status"] for event in reversed(await inbox_events(service, config))]


async def statuses_are(service: Service, config: Path, wanted: list[str]) -> bool:
    return await statuses(service, config) == wanted


async def test_suspend_holds_acked_events_resume_runs_them_in_order_discard_drops_them(
    service: Service, twilio: FakeTwilioApi
) -> None:
    config = write_config(service, twilio)
    server = await service.start_ready("--config", str(config))
    listed = await service.cli("triggers", "list", "--config", str(config))
    assert row(listed, "whatsapp")[1:4] == ["active", "0", "0"], listed.describe()

    suspended = await triggers(service, config, "suspend", "whatsapp")
    assert suspended.startswith("suspended whatsapp:"), suspended
    texts = ["first", "second", "third"]
    for text in texts:
        answer = await post_signed(server, message(text))
        assert answer.status_code == 200, answer.text  # acknowledged while suspended
    assert await statuses(service, config) == ["held"] * 3
    health: dict[str, Any] = json.loads(await triggers(service, config, "list", "--json"))
    [whatsapp] = [t for t in health["triggers"] if t["name"] == "whatsapp"]
    assert whatsapp["state"] == "suspended" and whatsapp["counts"].get("held") == 3, whatsapp
    assert twilio.messages == [] and await whatsapp_runs(service, config) == []

    resumed = await triggers(service, config, "resume", "whatsapp")
    assert resumed.strip() == "resumed whatsapp: 3 event(s) waiting to be processed", resumed
    replies = await twilio.wait_for(3, timeout=60)
    assert [sent.body for sent in replies] == texts, "held events run in arrival order"

    await wait_until(
        lambda: statuses_are(service, config, ["processed"] * 3),
        30,
        "the three resumed events to be processed",
    )
    assert len(await whatsapp_runs(service, config)) == 3

    # Discard: held events are marked discarded and never run; later ones run again.
    await triggers(service, config, "suspend", "whatsapp")
    for text in ("dropped", "dropped too"):
        assert (await post_signed(server, message(text))).status_code == 200
    assert await statuses(service, config) == ["processed"] * 3 + ["held"] * 2
    discarded = await triggers(service, config, "discard", "whatsapp")
    assert discarded.strip() == "discarded 2 held event(s) of whatsapp", discarded
    again = await triggers(service, config, "discard", "whatsapp", "--json")
    assert json.loads(again) == {"trigger": "whatsapp", "discarded": 0}
    resumed = await triggers(service, config, "resume", "whatsapp")
    assert resumed.strip() == "resumed whatsapp: 0 event(s) waiting to be processed", resumed
    assert (await post_signed(server, message("after"))).status_code == 200
    [*_, last] = await twilio.wait_for(4, timeout=60)
    assert last.body == "after"
    final = ["processed"] * 3 + ["discarded"] * 2 + ["processed"]
    await wait_until(
        lambda: statuses_are(service, config, final),
        30,
        "the message after the resume to be processed",
    )
    assert [sent.body for sent in twilio.messages] == [*texts, "after"]
    assert len(await whatsapp_runs(service, config)) == 4
