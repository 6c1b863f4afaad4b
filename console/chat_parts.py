"""The chat tester's names and parts: its triggers, its synthetic senders, what it is built from,
and each channel's settings as the tester uses them (``console/chat_channel.py`` explains it)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx

from core.clock import Clock
from core.db import Database
from core.inbox import Inbox
from core.ports import ChatActivity, DeliveryFailures, RunHistory
from triggers.email.settings import EmailSettings
from triggers.files import FileStore
from triggers.slack.settings import SlackSettings
from triggers.whatsapp.settings import WhatsAppSettings

KINDS = ("slack", "whatsapp", "email")
"""The channels the tester speaks as."""
TRIGGER_PREFIX = "console:"
OWNER_HEADER = "console-owner"
"""The stored event's header naming the signed-in owner who typed it."""
TEAM = "console"
"""The Slack workspace of the tester's messages (real team ids are ``T…``)."""
BOT_USER = "UCONSOLEBOT"
"""The tester's Slack bot user (owner ids are lower case: no tester user is ``UCONSOLEBOT``)."""
OUR_NUMBER = "whatsapp:console"
TWILIO_ACCOUNT = "ACconsole"
MAIL_DOMAIN = "console.invalid"
"""RFC 2606: ``.invalid`` names no real host, so no real mail can be one of these."""
AUTO_REPLIES = 1_000_000
"""Email's replies-per-sender-per-hour guard is for strangers' auto-responders: the tester is the
operator typing, so it is not held to ``[email] auto_replies_per_hour``."""


@dataclass(frozen=True, slots=True)
class ChatDeps:
    """What the tester's channel takes from the running services."""

    inbox: Inbox
    database: Database
    clock: Clock
    files: FileStore
    http: httpx.AsyncClient
    """WhatsApp's media downloads, Slack's file copies (the tester sends no file)"""
    history: RunHistory
    """whether a Slack message's run is stored (its twin's)"""
    chats: ChatActivity
    """WhatsApp's 24-hour window: the tester's chat is open once its message made a run"""
    delivery_failures: DeliveryFailures
    ensure_owner: Callable[[str], Awaitable[object]]
    slack: SlackSettings
    whatsapp: WhatsAppSettings
    email: EmailSettings
    workflow: str
    """``[console] chat_workflow``: answers a channel that names no workflow of its own"""
    delivery_attempts: int


def trigger_of(kind: str) -> str:
    return f"{TRIGGER_PREFIX}{kind}"


def chat_triggers() -> list[str]:
    return [trigger_of(kind) for kind in KINDS]


def slack_settings(deps: ChatDeps, owner: str) -> SlackSettings:
    """``[slack]`` for the tester: its routes, the tester's owner, ``chat_workflow`` if none."""
    settings = deps.slack
    return settings.model_copy(
        update={"owner": owner, "workflow": settings.workflow or deps.workflow}
    )


def whatsapp_settings(deps: ChatDeps, owner: str) -> WhatsAppSettings:
    """``[whatsapp]`` for the tester: its routes, the tester's owner and account, no template
    (the tester's chat is always inside the window)."""
    settings = deps.whatsapp
    return settings.model_copy(
        update={
            "owner": owner,
            "workflow": settings.workflow or deps.workflow,
            "account_sid": TWILIO_ACCOUNT,
            "from_number": OUR_NUMBER,
        }
    )


def email_settings(deps: ChatDeps, owner: str) -> EmailSettings:
    """``[email]`` for the tester: its routes, the tester's domain ours, the tester's owner."""
    settings = deps.email
    return settings.model_copy(
        update={
            "owner": owner,
            "domains": (*settings.domains, MAIL_DOMAIN),
            "workflow": settings.workflow or deps.workflow,
            "auto_replies_per_hour": AUTO_REPLIES,
        }
    )


def sender_address(owner: str) -> str:
    return f"{owner}@{MAIL_DOMAIN}"


def whatsapp_user(owner: str) -> str:
    return f"whatsapp:{TEAM}-{owner}"
