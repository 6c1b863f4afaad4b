"""``[[email.mailboxes]]``: an IMAP mailbox the email channel reads (trigger ``email:imap:<name>``).

Mail found in a mailbox goes through the same processing as mail to the SMTP port: the mailbox's
``address`` is one of ours, so ``[[email.routes]]`` for it (or ``workflow`` here, or
``[email] workflow``) decide the run, and the reply goes out through ``[email] relay_url``.
"""

from __future__ import annotations

from ipaddress import ip_address
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from core.sections import Section


class MailboxSettings(Section):
    name: str = Field(
        pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$",
        description="names the trigger email:imap:<name> (lower-case letters, digits, - and _)",
    )
    host: str
    port: int = Field(default=993, ge=1, le=65535)
    tls: Literal["implicit", "starttls", "none"] = Field(
        default="implicit",
        description="implicit (IMAPS, 993), starttls (143), or none: only to a loopback host",
    )
    ca_file: Path | None = Field(
        default=None,
        description="PEM CA bundle the server's certificate is checked against; default: the "
        "system's",
    )
    username: str
    password: SecretStr | None = None
    password_secret: str | None = Field(
        default=None,
        description="instead of password: the name of a secret of [email] owner "
        "(`switchboard secrets set NAME`), read at each connection",
    )
    folder: str = Field(default="INBOX", description="the folder watched")
    processed_folder: str | None = Field(
        default=None,
        description="move each mail there once it is in the inbox (UID MOVE); none: flag it "
        "\\Seen and leave it",
    )
    address: str | None = Field(
        default=None,
        description="the mailbox's address: our recipient of the mail found there and the From "
        "of replies; default: username when it is an address",
    )
    workflow: str | None = Field(
        default=None,
        description="workflow of this mailbox's mail; default: [[email.routes]] for address, "
        "then [email] workflow",
    )
    poll_seconds: float = Field(
        default=60.0, gt=0, description="how often to look for mail when the server has no IDLE"
    )
    failing_after: float = Field(
        default=300.0,
        ge=0,
        description="seconds the mailbox may stay unreachable before its health says failing",
    )

    @field_validator("address")
    @classmethod
    def _lower(cls, value: str | None) -> str | None:
        return value.strip().lower() if value else value

    @model_validator(mode="after")
    def _checks(self) -> MailboxSettings:
        where = f"mailbox {self.name!r}"
        if (self.password is None) == (self.password_secret is None):
            raise ValueError(f"{where}: give password or password_secret (one of them)")
        if self.tls == "none" and not _is_loopback(self.host):
            raise ValueError(
                f"{where}: tls = 'none' sends the password in clear text; it is allowed only to "
                f"a loopback host, not {self.host!r} (use implicit or starttls)"
            )
        if self.mail_address is None:
            raise ValueError(f"{where}: set address (username {self.username!r} is no address)")
        return self

    @property
    def mail_address(self) -> str | None:
        """``address``, else ``username`` when it looks like one."""
        if self.address:
            return self.address
        if "@" in self.username:
            return self.username.strip().lower()
        return None

    @property
    def trigger(self) -> str:
        return f"email:imap:{self.name}"


def _is_loopback(host: str) -> bool:
    if host.strip().lower() in {"localhost", "localhost."}:
        return True
    try:
        return ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
