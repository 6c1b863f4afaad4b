"""The one settings tree (DESIGN §7). Built once by the composition root and passed down.

Sources, highest first: keyword arguments, environment variables ``SWITCHBOARD_<SECTION>__<KEY>``,
the TOML file given with ``--config``, the defaults below. Nothing below the composition root reads
the environment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from console.settings import ConsoleSettings
from core.sections import Section
from dispatch.settings import DeliverySettings, InboxSettings, RuntimeSettings
from scheduler.settings import SchedulerSettings, ScheduleSpec
from triggers.email.settings import EmailSettings
from triggers.file_settings import FilesSettings
from triggers.slack.settings import SlackSettings
from triggers.whatsapp.settings import WhatsAppSettings

MIN_MASTER_KEY_LENGTH = 32


class ServerSettings(Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    public_url: str | None = Field(
        default=None,
        description="URL the outside world uses to reach this server; signed file URIs and "
        "CODEWORDS_RUNTIME_URI are built from it. Default: http://host:port.",
    )
    data_dir: Path = Path(".switchboard")
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL. Default: SQLite (WAL) at <data_dir>/switchboard.db. "
        "PostgreSQL: postgresql+asyncpg://user:pass@host/db.",
    )
    max_body_size: int = Field(default=10 * 1024 * 1024, ge=1024)
    header_timeout: float = Field(
        default=15.0,
        gt=0,
        description="seconds a connection has, from opening or from its previous answer, to send "
        "a complete request head; then it is closed (slow clients, idle keep-alive)",
    )
    body_timeout: float = Field(
        default=120.0,
        gt=0,
        description="seconds a request body has to arrive in full; then the request is answered "
        "408 and the connection closed (raise it for large uploads on slow links)",
    )
    secret_key: SecretStr | None = Field(
        default=None,
        description="Key for signed URIs and run-scoped API keys. Default: generated once and kept "
        "in <data_dir>/secret.key (mode 0600).",
    )
    secrets_key: SecretStr | None = Field(
        default=None,
        description="master key (at least 32 characters) that encrypts the data keys of stored "
        "secrets; set the same on every node. Default: generated once and kept in "
        "<data_dir>/secrets.key (mode 0600)",
    )
    secrets_key_previous: SecretStr | None = Field(
        default=None,
        description="the master key being replaced: still accepted for reading until "
        "`switchboard secrets rotate-key` has re-encrypted every data key (README 'Secrets')",
    )
    metrics_key: SecretStr | None = Field(
        default=None,
        description="when set, /metrics answers only requests with Authorization: Bearer <key>",
    )
    log_level: str = "INFO"
    log_format: Literal["text", "json"] = "text"
    auth_cache_seconds: float = Field(
        default=2.0,
        ge=0,
        description="How long a verified key is trusted without asking the database again; a key "
        "revoked on another process stops working within this time.",
    )
    sqlite_synchronous: Literal["FULL", "NORMAL"] = "FULL"

    @field_validator("secrets_key", "secrets_key_previous")
    @classmethod
    def _long_master_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value().strip()) < MIN_MASTER_KEY_LENGTH:
            raise ValueError(
                f"a secrets master key needs at least {MIN_MASTER_KEY_LENGTH} characters "
                "(openssl rand -base64 32)"
            )
        return value

    def base_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        return f"http://{self.host}:{self.port}"

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'switchboard.db').resolve()}"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SWITCHBOARD_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    server: ServerSettings = ServerSettings()
    runtime: RuntimeSettings = RuntimeSettings()
    files: FilesSettings = FilesSettings()
    delivery: DeliverySettings = DeliverySettings()
    inbox: InboxSettings = InboxSettings()
    slack: SlackSettings = SlackSettings()
    whatsapp: WhatsAppSettings = WhatsAppSettings()
    email: EmailSettings = EmailSettings()
    scheduler: SchedulerSettings = SchedulerSettings()
    console: ConsoleSettings = ConsoleSettings()
    schedules: list[ScheduleSpec] = Field(default_factory=list, description="[[schedules]]")

    def env_dir(self) -> Path:
        return (self.runtime.env_dir or self.server.data_dir / "envs").resolve()

    def uv_cache_dir(self) -> Path:
        return (self.runtime.uv_cache_dir or self.server.data_dir / "uv-cache").resolve()
