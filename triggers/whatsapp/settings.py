"""``[whatsapp]``: the Twilio WhatsApp channel (README "WhatsApp")."""

from __future__ import annotations

from typing import Any

from pydantic import Field, SecretStr, model_validator

from core.sections import Section


def whatsapp_address(number: str) -> str:
    """``+1555…`` or ``whatsapp:+1555…`` → ``whatsapp:+1555…`` (Twilio's ``To``/``From``)."""
    number = number.strip()
    return number if number.startswith("whatsapp:") else f"whatsapp:{number}"


class WhatsAppRoute(Section):
    """Messages to ``to`` and/or starting with ``keyword`` go to ``workflow``; first match wins."""

    workflow: str
    to: str | None = Field(default=None, description="the receiving number (our sender)")
    keyword: str | None = Field(
        default=None,
        description="the message's first word, case-insensitive; removed from the text",
    )
    inputs: dict[str, Any] = Field(
        default_factory=dict, description="fixed inputs added to the message's inputs"
    )

    @model_validator(mode="after")
    def _needs_a_condition(self) -> WhatsAppRoute:
        if self.to is None and self.keyword is None:
            raise ValueError("a [[whatsapp.routes]] entry needs `to`, `keyword` or both")
        if self.keyword is not None and not self.keyword.strip():
            raise ValueError("a [[whatsapp.routes]] keyword must not be blank")
        return self


class WhatsAppSettings(Section):
    account_sid: str | None = Field(default=None, description="AC…; the channel is on when set")
    auth_token: SecretStr | None = Field(
        default=None, description="signs Twilio's webhooks and authenticates our API calls"
    )
    from_number: str | None = Field(
        default=None,
        description="sender for replies whose target names none (e.g. a schedule's message)",
    )
    api_url: str = Field(
        default="https://api.twilio.com", description="Twilio's REST API (tests: a fake)"
    )
    workflow: str | None = Field(
        default=None, description="the workflow for messages no route matches"
    )
    routes: tuple[WhatsAppRoute, ...] = ()
    owner: str = Field(default="default", description="owner of the runs WhatsApp messages start")
    template_sid: str | None = Field(
        default=None,
        description="ContentSid (HX…) of an approved template sent outside the 24-hour window",
    )
    template_variables: dict[str, str] = Field(
        default_factory=lambda: {"1": "{text}"},
        description="ContentVariables; {text}, {run_id} and {workflow} are filled in",
    )
    window_hours: float = Field(
        default=24.0, gt=0, description="WhatsApp's customer service window"
    )
    media_timeout: float = Field(
        default=10.0,
        gt=0,
        description="seconds to download an inbound message's media (after answering Twilio; "
        "the message's run waits for it)",
    )
    send_timeout: float = Field(default=15.0, gt=0, description="seconds per Twilio API call")

    @property
    def enabled(self) -> bool:
        return self.account_sid is not None and self.auth_token is not None
