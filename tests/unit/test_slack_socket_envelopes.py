"""Socket Mode envelopes into inbox events, and the settings that turn the transport on."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError
from slack_sdk.socket_mode.request import SocketModeRequest

from triggers.slack.channel import configured_triggers
from triggers.slack.settings import SlackSettings
from triggers.slack.socket import arriving_event

SETTINGS = SlackSettings.model_validate(
    {"app_token": "xapp-1", "socket_mode": True, "workflow": "echo"}
)


def envelope(kind: str, payload: dict[str, Any], *, accepts: bool = False) -> SocketModeRequest:
    return SocketModeRequest(kind, "env-1", payload, accepts_response_payload=accepts)


def test_an_event_is_stored_with_the_http_edges_keys_and_acked_without_payload() -> None:
    event = {"type": "app_mention", "channel": "C1", "ts": "1.2", "thread_ts": "1.0"}
    body = {"team_id": "T1", "event_id": "Ev9", "type": "event_callback", "event": event}
    stored, ack = arriving_event(SETTINGS, envelope("events_api", body))
    assert stored is not None and ack is None
    assert (stored.trigger, stored.dedupe_key, stored.ordering_key) == (
        "slack:socket",
        "slack:Ev9",
        "slack:T1:C1:1.0",
    )
    assert json.loads(stored.body) == body
    assert stored.headers == {"content-type": "application/json"}


def test_an_interaction_is_keyed_by_its_trigger_id_and_its_container() -> None:
    payload = {
        "type": "block_actions",
        "trigger_id": "tr1",
        "team": {"id": "T1"},
        "channel": {"id": "C2"},
        "container": {"message_ts": "5.5"},
    }
    stored, _ = arriving_event(SETTINGS, envelope("interactive", payload, accepts=True))
    assert stored is not None
    assert (stored.dedupe_key, stored.ordering_key) == ("slack:trigger:tr1", "slack:T1:C2:5.5")


def test_a_command_no_route_takes_is_answered_and_not_stored() -> None:
    routed = SlackSettings.model_validate(
        {
            "app_token": "xapp-1",
            "socket_mode": True,
            "routes": [{"workflow": "ask", "commands": ["/ask"]}],
        }
    )
    command = {"command": "/nope", "channel_id": "C1", "team_id": "T1", "text": "x"}
    stored, ack = arriving_event(routed, envelope("slash_commands", command, accepts=True))
    assert stored is None and ack == {"text": "No workflow answers /nope here."}
    stored, ack = arriving_event(
        routed, envelope("slash_commands", {**command, "command": "/ask"}, accepts=True)
    )
    assert stored is not None and ack == {"text": "Working on it…"}


def test_socket_mode_turns_the_http_routes_off_unless_asked_for() -> None:
    assert configured_triggers(SETTINGS) == ["slack:socket"] and not SETTINGS.http_routes
    both = SlackSettings.model_validate(
        {"app_token": "xapp-1", "socket_mode": True, "http_events": True, "signing_secret": "s"}
    )
    assert configured_triggers(both) == ["slack", "slack:socket"]
    http = SlackSettings.model_validate({"signing_secret": "s"})
    assert configured_triggers(http) == ["slack"]


@pytest.mark.parametrize(
    ("section", "problem"),
    [
        ({"socket_mode": True}, "socket_mode = true needs app_token"),
        ({"app_token": "xoxb-1"}, "app-level token"),
        ({"app_token": "xapp-1", "socket_mode": True, "http_events": True}, "needs signing_secret"),
    ],
)
def test_socket_settings_that_cannot_work_are_refused(
    section: dict[str, Any], problem: str
) -> None:
    with pytest.raises(ValidationError, match=problem):
        SlackSettings.model_validate(section)
