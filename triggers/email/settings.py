"""``[email]``: the email channel's settings (SMTP intake, inbound-parse webhooks, replies)."""

from __future__ import annotations

from ipaddress import IPv6Address, ip_address, ip_network
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator

from core.sections import Section
from triggers.email.mailbox_settings import MailboxSettings


class EmailRoute(Section):
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


class EmailSettings(Section):
    smtp_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="port of the SMTP intake server (25 for an MX: no AUTH); none: no MX",
    )
    submission_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="port of an SMTP submission server (587: STARTTLS and AUTH required, "
        "needs tls_cert/tls_key and auth_username/auth_password); none: no submission port",
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
    relay_ca_file: Path | None = Field(
        default=None,
        description="PEM CA bundle the relay's certificate is checked against (a private CA); "
        "default: the system's",
    )
    relay_password: SecretStr | None = None
    max_size: int = Field(default=25 * 1024 * 1024, ge=1024, description="largest message, bytes")
    max_attachments: int = Field(
        default=100,
        ge=0,
        description="attachments one mail may carry; more is refused (SMTP 552, never retried)",
    )
    tls_cert: Path | None = Field(default=None, description="PEM certificate for STARTTLS")
    tls_key: Path | None = None
    auth_username: str | None = Field(
        default=None,
        description="with auth_password: the one login of the submission port (AUTH "
        "PLAIN/LOGIN, after STARTTLS); never asked on smtp_port",
    )
    auth_password: SecretStr | None = None
    trusted_authserv_id: str | None = Field(
        default=None,
        description="authserv-id of the Authentication-Results headers we trust (our border MTA "
        "or provider)",
    )
    trusted_relays: tuple[str, ...] = Field(
        default=(),
        description="IPs/CIDRs of the MTAs in front of our SMTP port whose "
        "Authentication-Results we believe; empty: on the SMTP port no such header is trusted "
        "(RFC 8601 §5: anyone can write one), so require_dmarc routes refuse SMTP mail",
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
    retry_hours: float = Field(
        default=48.0,
        gt=0,
        description="how long a reply or send_email keeps being retried while the relay answers "
        "4xx or is unreachable (MTAs retry for days)",
    )
    send_email_per_hour: int = Field(
        default=100,
        ge=0,
        description="mails one owner may queue with send_email per hour, counted across nodes "
        "(more: HTTP 429 with retry_after); 0: no limit",
    )
    routes: tuple[EmailRoute, ...] = ()
    mailboxes: tuple[MailboxSettings, ...] = Field(
        default=(), description="IMAP mailboxes read as triggers email:imap:<name>"
    )

    @field_validator("domains", "addresses")
    @classmethod
    def _lower_all(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(value.strip().lower() for value in values)

    @field_validator("relay_url")
    @classmethod
    def _relay_url(cls, value: str | None) -> str | None:
        # The messages never repeat the URL: it may carry the relay's password.
        if not value:
            return value
        url = urlsplit(value)
        if url.scheme not in {"smtp", "smtps"} or not url.hostname:
            raise ValueError("relay_url must look like smtp://host:port or smtps://host")
        try:
            url.port  # noqa: B018 - urlsplit checks the port only when asked
        except ValueError:
            raise ValueError(
                "relay_url: the port is not a number (percent-encode / ? # @ in a password)"
            ) from None
        return value

    @field_validator("trusted_relays")
    @classmethod
    def _networks(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        for value in values:
            try:
                ip_network(value.strip(), strict=False)
            except ValueError as exc:
                raise ValueError(f"trusted_relays: {value!r} is not an IP or CIDR") from exc
        return tuple(value.strip() for value in values)

    @model_validator(mode="after")
    def _tls_pair(self) -> EmailSettings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("give both tls_cert and tls_key, or neither")
        if (self.auth_username is None) != (self.auth_password is None):
            raise ValueError("give both auth_username and auth_password, or neither")
        if self.submission_port is not None:
            if self.auth_username is None:
                raise ValueError("submission_port needs auth_username and auth_password")
            if self.tls_cert is None:
                raise ValueError("submission_port needs STARTTLS: give tls_cert and tls_key")
        elif self.auth_username is not None:
            raise ValueError(
                "auth_username is the login of the submission port: set submission_port "
                "(smtp_port is an MX and never asks for AUTH)"
            )
        return self

    @model_validator(mode="after")
    def _mailboxes(self) -> EmailSettings:
        names = [mailbox.name for mailbox in self.mailboxes]
        if len(set(names)) != len(names):
            raise ValueError(f"two [[email.mailboxes]] share a name: {sorted(names)}")
        routed = {route.address for route in self.routes}
        for mailbox in self.mailboxes:
            if not (mailbox.workflow or self.workflow or mailbox.mail_address in routed):
                raise ValueError(
                    f"mailbox {mailbox.name!r}: no workflow for its mail (set workflow, a route "
                    f"for {mailbox.mail_address}, or [email] workflow)"
                )
        return self

    def is_trusted_relay(self, peer: str | None) -> bool:
        """Whether an SMTP client at ``peer`` is one of ``trusted_relays``."""
        if not peer or not self.trusted_relays:
            return False
        try:
            address = ip_address(peer.split("%")[0])
        except ValueError:
            return False
        if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in ip_network(network, strict=False) for network in self.trusted_relays)
