"""A schedule's output reaches its ``deliver_to`` through the channel senders: a fake Slack Web API,
an SMTP relay (aiosmtpd sink) and a fake Twilio API, all on loopback (issue 7, "Where the output
goes"). The webhook target is tested with the other schedule tests."""

from __future__ import annotations

import json

from core.models import RunRecord
from scheduler.models import ScheduleSpec
from tests.conftest import Live, LiveFactory
from tests.fakes.slack_api import SlackApi
from tests.fakes.smtp_sink import SmtpSink
from tests.fakes.twilio_api import (
    SANDBOX_NUMBER,
    FakeTwilioApi,
)
from tests.integration.deliveries import wait_for_delivery
from tests.integration.email_helpers import start_email
from tests.integration.schedule_helpers import EVERY_SECOND, eventually, schedule_runs
from tests.integration.test_slack_oauth import install
from tests.integration.test_slack_oauth import start as start_oauth

TEMPLATE_SID = "HX" + "1" * 32


async def first_scheduled_run(live: Live, schedule_id: str, deliver_to: str) -> RunRecord:
    """Create an every-second schedule, wait for its first run, then pause it."""
    await live.services.schedules.create(
        "default",
        ScheduleSpec(
            id=schedule_id,
            service_id="echo",
            cron=EVERY_SECOND,
            inputs={"reply": "**Good** morning"},
            deliver_to=deliver_to,
        ),
    )

    async def runs() -> list[RunRecord] | None:
        return await schedule_runs(live, schedule_id) or None

    run = (await eventually(runs, f"a run of schedule {schedule_id}"))[0]
    await live.services.schedules.pause(None, schedule_id)
    return run


async def test_scheduled_output_is_posted_to_a_slack_channel(
    live_factory: LiveFactory, slack: SlackApi
) -> None:
    live = await live_factory.start(slack=slack.slack_section("s" * 32))
    run = await first_scheduled_run(live, "to-slack", "slack:C0DAILY")
    delivery = await wait_for_delivery(live, run.id, "sent")
    assert delivery["channel"] == "slack"
    posts = [call for call in slack.posts if call.args.get("channel") == "C0DAILY"]
    assert len(posts) == 1
    assert posts[0].args["text"] == "*Good* morning"  # Markdown rendered as mrkdwn
    assert not posts[0].args.get("thread_ts")  # a new message, not a thread reply


async def test_scheduled_output_reaches_a_workspace_installed_with_oauth(
    live_factory: LiveFactory, slack: SlackApi
) -> None:
    """No single bot token: ``slack:<team id>/<channel id>`` picks the installation's token."""
    live = await start_oauth(live_factory, slack)
    assert (await install(live, "abc")).status_code == 200
    slack.tokens["xoxb-abc"] = ("TABC", "UBABC")
    run = await first_scheduled_run(live, "to-installed", "slack:TABC/C0DAILY")
    delivery = await wait_for_delivery(live, run.id, "sent")
    assert delivery["channel"] == "slack"
    [post] = [call for call in slack.posts if call.args.get("channel") == "C0DAILY"]
    assert post.token == "xoxb-abc" and post.args["text"] == "*Good* morning"
    # A bare channel has no workspace to take a token from: the delivery fails visibly.
    bare = await first_scheduled_run(live, "to-bare", "slack:C0DAILY")
    failed = await wait_for_delivery(live, bare.id, "failed")
    assert "no bot token" in str(failed["last_error"])


async def test_scheduled_output_is_mailed_through_the_relay(
    live_factory: LiveFactory, sink: SmtpSink
) -> None:
    live = await start_email(live_factory, sink, from_address="Switchboard <bot@example.test>")
    run = await first_scheduled_run(live, "to-mail", "email:alice@example.test")
    delivery = await wait_for_delivery(live, run.id, "sent")
    assert delivery["channel"] == "email"
    [mail] = await sink.wait_for(1)
    assert mail["To"] == "alice@example.test"
    assert "Good" in mail.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert mail["In-Reply-To"] is None  # a new message, not a reply


async def test_scheduled_output_to_whatsapp_uses_the_template_outside_the_window(
    live_factory: LiveFactory, twilio: FakeTwilioApi
) -> None:
    live = await live_factory.start(whatsapp=twilio.whatsapp_section(template_sid=TEMPLATE_SID))
    run = await first_scheduled_run(live, "to-whatsapp", "whatsapp:+15557654321")
    delivery = await wait_for_delivery(live, run.id, "sent")
    assert delivery["channel"] == "whatsapp"
    [sent] = await twilio.wait_for(1)
    assert sent.to == "whatsapp:+15557654321" and sent.sender == SANDBOX_NUMBER
    # The user never wrote: no free-form text, the approved template with the answer filled in.
    assert sent.get("ContentSid") == TEMPLATE_SID and sent.body is None
    assert "Good" in json.loads(sent.get("ContentVariables") or "{}")["1"]
