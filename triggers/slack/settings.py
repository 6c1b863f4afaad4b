"""The ``[slack]`` settings section: one Slack app serving many workflows (PROTOCOLS §1)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

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
        default=None, description="the app's signing secret; the HTTP event routes need it"
    )
    app_token: SecretStr | None = Field(
        default=None, description="xapp-… (scope connections:write): Socket Mode's app-level token"
    )
    socket_mode: bool = Field(
        default=False,
        description="take events over Slack's Socket Mode (no public URL); each web node holds "
        "one connection (Slack allows 10 per app)",
    )
    http_events: bool | None = Field(
        default=None,
        description="serve /slack/events and /slack/commands; default: on unless socket_mode",
    )
    socket_ping_interval: float = Field(
        default=10.0, gt=0, description="seconds between pings; no pong in half of it: reconnect"
    )
    socket_backoff_max: float = Field(
        default=30.0, gt=0, description="the longest wait between two failed connection attempts"
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

    @field_validator("app_token")
    @classmethod
    def _app_level(cls, token: SecretStr | None) -> SecretStr | None:
        if token is not None and not token.get_secret_value().startswith("xapp-"):
            raise ValueError("app_token must be an app-level token (xapp-…), not a bot token")
        return token

    @model_validator(mode="after")
    def _transports(self) -> SlackSettings:
        if self.socket_mode and self.app_token is None:
            raise ValueError("socket_mode = true needs app_token (xapp-…)")
        if self.http_events and self.signing_secret is None:
            raise ValueError("http_events = true needs signing_secret")
        return self

    @property
    def enabled(self) -> bool:
        return self.signing_secret is not None or self.socket_mode

    @property
    def http_routes(self) -> bool:
        """Whether this node serves the HTTP Events API and slash-command routes."""
        wanted = self.http_events if self.http_events is not None else not self.socket_mode
        return wanted and self.signing_secret is not None

    @property
    def oauth_enabled(self) -> bool:
        return self.client_id is not None and self.client_secret is not None
