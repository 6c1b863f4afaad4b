"""``[email]``: the email channel's settings (SMTP intake, inbound-parse webhooks, replies)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EmailRoute(_Section):
    """``[[email.routes]]``: mail to ``address`` runs ``workflow``.

    ``address`` may carry a plus tag (``bot+sales@example.com``): that exact tagged address
    matches first, then the address without its tag (``bot@example.com`` matches every tag).
    """

    address: str
    workflow: str
    allow_senders: tuple[str, ...] = Field(
        default=(),
        description="shell patterns (fnmatch, case-insensitive) for the From address, e.g. "
        "'*@example.com'; empty: anyone",
    )
    require_dmarc: bool = Field(
        default=False,
        description="accept only mail with a DMARC (or aligned DKIM) pass in an "
        "Authentication-Results header from trusted_authserv_id",
    )
    inputs: dict[str, Any] = Field(
        default_factory=dict, description="fixed inputs added to the message"
    )

    @field_validator("address")
    @classmethod
    def _lower(cls, value: str) -> str:
        return value.strip().lower()


class EmailSettings(_Section):
    smtp_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="port of the SMTP intake server (25 for an MX); none: no SMTP server",
    )
    smtp_host: str = Field(default="127.0.0.1", description="interface the SMTP server binds")
    hostname: str | None = Field(
        default=None,
        description="name in the SMTP banner and in our Message-IDs; default: the domain of "
        "from_address",
    )
    domains: tuple[str, ...] = Field(
        default=(), description="every address at these domains is ours (mail to them is taken)"
    )
    addresses: tuple[str, ...] = Field(default=(), description="single addresses that are ours")
    workflow: str | None = Field(
        default=None, description="workflow for mail to our addresses that no route matches"
    )
    owner: str = Field(default="default", description="owner of the runs email starts")
    from_address: str | None = Field(
        default=None,
        description="From of replies and send_email; default: the address the mail was sent to "
        "(replies) or the first of addresses",
    )
    relay_url: str | None = Field(
        default=None,
        description="smtp://[user:password@]host[:port][?starttls=required|off] or smtps://…; "
        "none: mail goes to the Maildir outbox <data_dir>/outbox",
    )
    relay_username: str | None = None
    relay_password: SecretStr | None = None
    max_size: int = Field(default=25 * 1024 * 1024, ge=1024, description="largest message, bytes")
    tls_cert: Path | None = Field(default=None, description="PEM certificate for STARTTLS")
    tls_key: Path | None = None
    auth_username: str | None = Field(
        default=None,
        description="with auth_password: SMTP AUTH (PLAIN/LOGIN, after STARTTLS) is required "
        "(a submission port, not an MX)",
    )
    auth_password: SecretStr | None = None
    trusted_authserv_id: str | None = Field(
        default=None,
        description="authserv-id of the Authentication-Results headers we trust (our border MTA "
        "or provider)",
    )
    mailgun_signing_key: SecretStr | None = None
    mailgun_max_age: int = Field(
        default=300, ge=1, description="seconds a Mailgun signature timestamp stays valid"
    )
    sendgrid_token: SecretStr | None = Field(
        default=None,
        description="secret of POST /email/sendgrid/<token> (or the Basic auth password)",
    )
    auto_replies_per_hour: int = Field(
        default=10, ge=0, description="replies to one sender per hour; further mail runs silently"
    )
    routes: tuple[EmailRoute, ...] = ()

    @field_validator("domains", "addresses")
    @classmethod
    def _lower_all(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(value.strip().lower() for value in values)

    @model_validator(mode="after")
    def _tls_pair(self) -> EmailSettings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("give both tls_cert and tls_key, or neither")
        if (self.auth_username is None) != (self.auth_password is None):
            raise ValueError("give both auth_username and auth_password, or neither")
        if self.auth_username is not None and self.tls_cert is None:
            raise ValueError("SMTP AUTH needs STARTTLS: give tls_cert and tls_key too")
        return self
