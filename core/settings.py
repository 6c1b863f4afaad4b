"""The one settings tree (DESIGN §7). Built once by the composition root and passed down.

Sources, highest first: keyword arguments, environment variables ``SWITCHBOARD_<SECTION>__<KEY>``,
the TOML file given with ``--config``, the defaults below. Nothing below the composition root reads
the environment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, IPvAnyNetwork, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.addresses import DestinationPolicy
from core.email_settings import EmailSettings
from core.models import WorkflowLimits
from core.replies import DEFAULT_FAILURE_LINE
from core.scheduler_settings import SchedulerSettings, ScheduleSpec
from core.slack_settings import SlackSettings
from core.whatsapp_settings import WhatsAppSettings

MIN_MASTER_KEY_LENGTH = 32


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerSettings(_Section):
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


class RuntimeSettings(_Section):
    sync_timeout: float = Field(default=120.0, gt=0)
    run_timeout: float = Field(default=1800.0, gt=0)
    workers: int = Field(default=8, ge=0, description="runs executed at once by this node")
    per_workflow_limit: int = Field(
        default=4, ge=1, description="runs of one workflow executed at once, across all nodes"
    )
    lease_seconds: float = Field(
        default=30.0,
        gt=0,
        description="a run whose worker stopped renewing its lease for this long is taken again",
    )
    max_attempts: int = Field(default=3, ge=1)
    shutdown_grace: float = Field(
        default=10.0,
        ge=0,
        description="on SIGTERM, seconds running runs get to finish before they are handed back",
    )
    poll_interval: float = Field(default=0.5, gt=0)
    sandbox: Literal["auto", "bwrap", "process"] = Field(
        default="auto",
        description="bwrap: namespaces, cgroup and rlimits per run (README 'Sandbox'); the server "
        "refuses to start where the host cannot give them. auto: bwrap where the host can, else "
        "process with a loud warning. process: plain child processes, for development only",
    )
    sandbox_uid: int = Field(
        default=65534,
        ge=1,
        description="host uid (and gid) that sandboxed workflows run as; never 0",
    )
    zygote: bool = Field(
        default=True,
        description="with sandbox = bwrap: fork each run from a zygote per environment that has "
        "imported the workflow stack (≈ 40 ms cold starts instead of ≈ 400 ms); each child gets "
        "the same isolation as a fresh sandbox (README 'Sandbox')",
    )
    zygote_cap: int = Field(
        default=8, ge=1, description="idle zygotes kept at most (least recently used stop first)"
    )
    network_allow: list[IPvAnyNetwork] = Field(
        default_factory=list,
        description="private, link-local or reserved networks (CIDR) that workflows with network "
        "= internet may reach all the same; everything else of that kind is refused (README "
        "'Sandbox')",
    )
    warm_idle_ttl: float = Field(
        default=60.0,
        gt=0,
        description="seconds a warm process (a workflow with warm = true) waits, idle, for the "
        "next run of its workflow version and owner before it is torn down",
    )
    warm_cap: int = Field(
        default=8,
        ge=0,
        description="warm processes kept at most (least recently used idle ones go first); "
        "0 turns warm reuse off",
    )
    limits: WorkflowLimits = Field(
        default=WorkflowLimits(),
        description="per-run limits; a workflow overrides them in its [tool.switchboard] table",
    )
    workflow_log_level: str = "INFO"
    provision_ttl: float = Field(
        default=3600.0,
        gt=0,
        description="seconds a husk from /provision-request waits to be filled; then it fails "
        "(and its /logs and /result waits end)",
    )
    logs_max_seconds: float = Field(
        default=3600.0,
        gt=0,
        description="seconds one /logs stream stays open at most (read on with ?after=)",
    )
    max_response_size: int = Field(
        default=10 * 1024 * 1024,
        ge=1024,
        description="bytes a workflow's answer may have; a larger one fails the run (it is "
        "never held whole in memory)",
    )
    env_dir: Path | None = Field(default=None, description="default <data_dir>/envs")
    uv_cache_dir: Path | None = Field(default=None, description="default <data_dir>/uv-cache")
    startup_timeout: float = Field(default=60.0, gt=0)
    examples_dir: Path | None = Field(
        default=None,
        description="workflows registered on start (the demo); default: the repository's examples/",
    )
    register_examples: bool = True


class FilesSettings(_Section):
    max_size: int = Field(default=100 * 1024 * 1024, ge=1)
    upload_ttl: int = Field(default=3600, ge=1, description="seconds an upload URI stays valid")
    download_ttl: int = Field(
        default=7 * 24 * 3600, ge=1, description="seconds a download URI stays valid"
    )


class DeliverySettings(_Section):
    webhook_secret: SecretStr | None = Field(
        default=None,
        description="key of the X-Switchboard-Signature HMAC on webhook deliveries; default: "
        "derived from the server secret",
    )
    failure_line: str = Field(
        default=DEFAULT_FAILURE_LINE,
        description="the one line a failed run sends back; {run_id} and {status} are filled in",
    )
    max_attempts: int = Field(default=8, ge=1)
    lease_seconds: float = Field(default=60.0, gt=0)
    allow_hosts: tuple[str, ...] = Field(
        default=(),
        description="webhook hosts or ranges allowed besides public addresses: names "
        "('hooks.internal.example', '*.internal.example'), addresses or CIDR ranges "
        "('10.0.5.0/24'); loopback, private and link-local targets are refused without",
    )

    @field_validator("allow_hosts")
    @classmethod
    def _valid_allow_hosts(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        DestinationPolicy.allowing(value)
        return value

    def destinations(self) -> DestinationPolicy:
        """Where a webhook delivery may go."""
        return DestinationPolicy.allowing(self.allow_hosts)


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
    slack: SlackSettings = SlackSettings()
    whatsapp: WhatsAppSettings = WhatsAppSettings()
    email: EmailSettings = EmailSettings()
    scheduler: SchedulerSettings = SchedulerSettings()
    schedules: list[ScheduleSpec] = Field(default_factory=list, description="[[schedules]]")

    def env_dir(self) -> Path:
        return (self.runtime.env_dir or self.server.data_dir / "envs").resolve()

    def uv_cache_dir(self) -> Path:
        return (self.runtime.uv_cache_dir or self.server.data_dir / "uv-cache").resolve()
