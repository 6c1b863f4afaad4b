"""Slack payloads → Switchboard models, without I/O: which events to answer, which workflow
answers them, and the run request each one becomes (PROTOCOLS §1.2, §1.4; DESIGN §9).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from core.messages import Attachment, Conversation, InboundMessage, Person, run_request_for
from core.models import ReplyTarget, RunRequest
from triggers.slack.settings import SlackRoute, SlackSettings

# Subtypes that are still a person talking to us; everything else (edits, deletions, joins,
# bot_message…) is ignored. Bots are recognised by ``bot_id``, not by subtype (PROTOCOLS §1.2).
ANSWERED_SUBTYPES = frozenset({None, "file_share", "thread_broadcast"})
_MENTION = re.compile(r"<@([UW][A-Z0-9]+)(?:\|[^>]*)?>")
_SPACES = re.compile(r"[ \t]{2,}")


@dataclass(frozen=True, slots=True)
class Chosen:
    """The workflow a message goes to, and the text it gets (a route's keyword removed)."""

    workflow: str
    text: str
    route: SlackRoute | None


def ignored_because(event: Mapping[str, Any], bot_user_id: str | None) -> str | None:
    """Why a message event gets no answer, or ``None`` when it should get one."""
    if event.get("bot_id") or event.get("bot_profile"):
        return "sent by a bot"
    if bot_user_id is not None and event.get("user") == bot_user_id:
        return "sent by this app"
    if event.get("subtype") not in ANSWERED_SUBTYPES:
        return f"subtype {event.get('subtype')}"
    if not event.get("user") or not event.get("channel") or not event.get("ts"):
        return "no user, channel or ts"
    return None


def mentions(event: Mapping[str, Any], bot_user_id: str | None) -> bool:
    return bot_user_id is not None and bot_user_id in _MENTION.findall(str(event.get("text", "")))


def strip_mention(text: str, bot_user_id: str | None) -> str:
    """The text without the mention(s) of this app; other people's mentions stay."""

    def keep_others(match: re.Match[str]) -> str:
        return "" if match.group(1) == bot_user_id else match.group(0)

    return _SPACES.sub(" ", _MENTION.sub(keep_others, text)).strip()


def choose_workflow(
    settings: SlackSettings, *, channel: str, text: str, command: str | None = None
) -> Chosen | None:
    """The first route whose every criterion holds, else the default workflow, else nothing."""
    for route in settings.routes:
        if route.commands and command not in route.commands:
            continue
        if not route.commands and command is not None:
            continue
        if route.channels and channel not in route.channels:
            continue
        if route.keyword is not None:
            rest = _after_keyword(text, route.keyword)
            if rest is None:
                continue
            return Chosen(route.workflow, rest, route)
        return Chosen(route.workflow, text, route)
    if settings.workflow is None:
        return None
    return Chosen(settings.workflow, text, None)


def _after_keyword(text: str, keyword: str) -> str | None:
    head, _, rest = text.strip().partition(" ")
    if head.lower().rstrip(":,") != keyword.lower():
        return None
    return rest.strip()


def thread_of(event: Mapping[str, Any]) -> str:
    """The thread a reply goes to: the message's thread, or a new one under the message."""
    return str(event.get("thread_ts") or event["ts"])


def message_key(team_id: str, channel: str, ts: str) -> str:
    """The idempotency key of one user message. One message can arrive as ``app_mention`` and
    as ``message`` (different event ids), and again on every retry: all carry channel + ts."""
    return f"slack:{team_id}:{channel}:{ts}"


def team_of(body: Mapping[str, Any]) -> str:
    """The workspace of an event envelope or a slash command (``""`` when unknown)."""
    event = body.get("event") or {}
    return str(body.get("team_id") or event.get("team") or body.get("enterprise_id") or "")


def workspace_details(
    team_id: str, enterprise_id: str | None, enterprise_install: bool
) -> dict[str, Any]:
    """Where a reply target's workspace is recorded: the sender finds the bot token with it
    (an Enterprise Grid installation is keyed by its enterprise, an org-wide one by it alone)."""
    details: dict[str, Any] = {"team_id": team_id}
    if enterprise_id:
        details["enterprise_id"] = enterprise_id
    if enterprise_install:
        details["enterprise_install"] = True
    return details


def message_from_event(
    event: Mapping[str, Any],
    *,
    bot_user_id: str | None,
    sender_name: str | None,
    attachments: Sequence[Attachment],
    received_at: datetime,
) -> InboundMessage:
    """The DESIGN §9 message of a mention or DM (the mention of this app stripped)."""
    return InboundMessage(
        text=strip_mention(str(event.get("text") or ""), bot_user_id),
        channel="slack",
        sender=Person(id=str(event["user"]), name=sender_name),
        conversation=Conversation(id=str(event["channel"]), thread_id=thread_of(event)),
        attachments=tuple(attachments),
        received_at=received_at,
        event=dict(event),
    )


def message_from_command(
    command: Mapping[str, Any], *, sender_name: str | None, received_at: datetime
) -> InboundMessage:
    payload = {key: value for key, value in command.items() if key != "token"}
    return InboundMessage(
        text=str(command.get("text") or "").strip(),
        channel="slack",
        sender=Person(id=str(command.get("user_id") or ""), name=sender_name),
        conversation=Conversation(id=str(command.get("channel_id") or "")),
        received_at=received_at,
        event=payload,
    )


def _with_text(message: InboundMessage, text: str) -> InboundMessage:
    """The message with the text its workflow sees (a route's keyword removed); most messages
    have no keyword, and copying a model on every ack is not free."""
    return message if message.text == text else message.model_copy(update={"text": text})


def _routed_run_request(
    message: InboundMessage,
    chosen: Chosen,
    details: dict[str, Any],
    *,
    owner_id: str,
    thread_id: str | None = None,
    idempotency_key: str | None,
    serial_key: str,
    context: dict[str, str] | None = None,
) -> RunRequest:
    """The run of ``chosen``'s workflow for ``message`` (the route's text and fixed inputs),
    answered in the message's channel (``thread_id``) with the reply target's ``details``."""
    return run_request_for(
        _with_text(message, chosen.text),
        owner_id=owner_id,
        workflow=chosen.workflow,
        fixed_inputs=chosen.route.inputs if chosen.route else None,
        reply_target=ReplyTarget(
            channel="slack",
            address=message.conversation.id,
            thread_id=thread_id,
            details=details,
        ),
        idempotency_key=idempotency_key,
        serial_key=serial_key,
        context=context,
    )


def event_run_request(
    message: InboundMessage,
    chosen: Chosen,
    *,
    owner_id: str,
    team_id: str,
    event_id: str | None,
    enterprise_id: str | None = None,
    enterprise_install: bool = False,
) -> RunRequest:
    """The run for a mention/DM: replies in the message's thread, one run per message."""
    event = message.event
    channel = message.conversation.id
    thread = message.conversation.thread_id
    details = {
        **workspace_details(team_id, enterprise_id, enterprise_install),
        "message_ts": str(event["ts"]),
    }
    return _routed_run_request(
        message,
        chosen,
        details,
        owner_id=owner_id,
        thread_id=thread,
        idempotency_key=message_key(team_id, channel, str(event["ts"])),
        serial_key=f"slack:{team_id}:{channel}:{thread}",
        context={"X-Slack-Event-Id": event_id} if event_id else {},
    )


def command_run_request(
    message: InboundMessage,
    chosen: Chosen,
    *,
    owner_id: str,
    team_id: str,
    enterprise_id: str | None = None,
) -> RunRequest:
    """The run for a slash command: its result goes to ``response_url``."""
    command = message.event
    channel = message.conversation.id
    response_type = chosen.route.response_type if chosen.route else "ephemeral"
    trigger = str(command.get("trigger_id") or command.get("response_url") or "")
    details = {
        **workspace_details(team_id, enterprise_id, False),
        "response_url": str(command.get("response_url") or ""),
        "response_type": response_type,
    }
    return _routed_run_request(
        message,
        chosen,
        details,
        owner_id=owner_id,
        idempotency_key=f"slack:{team_id}:command:{trigger}"[:300] if trigger else None,
        serial_key=f"slack:{team_id}:{channel}:command",
    )
