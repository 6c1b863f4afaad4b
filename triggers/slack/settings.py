"""The ``[slack]`` settings section: one Slack app serving many workflows (PROTOCOLS §1)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, SecretStr

from core.sections import Section

DEFAULT_BOT_SCOPES = (
    "app_mentions:read",
    "chat:write",
    "commands",
    "im:history",
    "channels:history",
    "groups:history",
    "reactions:write",
    "files:read",
    "files:write",
    "users:read",
)


class SlackRoute(Section):
    """Which workflow answers which messages. Every criterion a route sets must hold; the first
    route that matches wins, else ``[slack] workflow``."""

    workflow: str
    channels: tuple[str, ...] = Field(default=(), description="channel ids (C…, D…, G…)")
    commands: tuple[str, ...] = Field(
        default=(),
        description="slash commands, e.g. '/ask'; a route with commands matches only them",
    )
    keyword: str | None = Field(
        default=None,
        description="a leading word (after the mention); it is removed from the text the "
        "workflow gets",
    )
    inputs: dict[str, Any] = Field(default_factory=dict, description="fixed inputs, on top")
    follow_threads: bool = Field(
        default=False,
        description="also answer plain (unmentioned) messages in threads the bot is already in",
    )
    response_type: Literal["ephemeral", "in_channel"] = Field(
        default="ephemeral", description="slash commands: who sees the result"
    )


class SlackSettings(Section):
    signing_secret: SecretStr | None = Field(
        default=None, description="the app's signing secret; the Slack routes exist only with it"
    )
    bot_token: SecretStr | None = Field(
        default=None, description="xoxb-… for a single workspace (no OAuth install needed)"
    )
    api_url: str = "https://slack.com/api/"
    workflow: str | None = Field(default=None, description="answers what no route matches")
    owner: str = Field(default="default", description="the owner Slack-triggered runs belong to")
    client_id: str | None = None
    client_secret: SecretStr | None = None
    scopes: tuple[str, ...] = DEFAULT_BOT_SCOPES
    redirect_uri: str | None = Field(
        default=None, description="default: <public_url>/slack/oauth_redirect"
    )
    routes: tuple[SlackRoute, ...] = ()
    working_reaction: str | None = Field(
        default="eyes", description="on the user's message while its run works; none: no reactions"
    )
    done_reaction: str | None = "white_check_mark"
    failed_reaction: str | None = "x"
    command_ack: str = Field(default="Working on it…", description="the slash-command ack line")
    message_limit: int = Field(default=3800, ge=200, le=40000, description="chars per message")
    channel_interval: float = Field(
        default=1.0, ge=0, description="seconds between two messages to one channel (Slack: ~1/s)"
    )

    @property
    def enabled(self) -> bool:
        return self.signing_secret is not None

    @property
    def oauth_enabled(self) -> bool:
        return self.client_id is not None and self.client_secret is not None
