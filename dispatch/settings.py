"""The engine's sections: ``[runtime]`` (queue, workers, sandbox), ``[delivery]`` (outbox) and
``[inbox]`` (the inbox processor and its retention)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, IPvAnyNetwork, SecretStr, field_validator

from core.addresses import DestinationPolicy
from core.models import WorkflowLimits
from core.replies import DEFAULT_FAILURE_LINE
from core.sections import Section


class RuntimeSettings(Section):
    sync_timeout: float = Field(default=120.0, gt=0)
    run_timeout: float = Field(default=1800.0, gt=0)
    workers: int = Field(default=8, ge=0, description="runs executed at once by this node")
    per_workflow_limit: int = Field(
        default=4, ge=1, description="runs of one workflow executed at once, across all nodes"
    )
    per_owner_limit: int = Field(
        default=6,
        ge=1,
        description="runs of one owner executed at once, across all nodes; kept below workers "
        "so that one owner's burst leaves a worker to the others (README 'Fair claiming')",
    )
    lease_seconds: float = Field(
        default=30.0,
        gt=0,
        description="a run whose worker stopped renewing its lease for this long is taken again",
    )
    max_attempts: int = Field(default=3, ge=1)
    bulk_limit: int = Field(
        default=500, ge=1, description="runs one POST /api/v1/runs/bulk cancels or replays at most"
    )
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
    runs_max_age_days: float = Field(
        default=14.0,
        gt=0,
        description="finished runs (and their logs and sent replies) older than this are deleted; "
        "never an unfinished run nor one whose reply is still waiting in the outbox",
    )
    runs_max_count: int = Field(
        default=10_000,
        ge=1,
        description="finished runs kept at most (the newest); older ones are deleted, except "
        "those younger than retention_min_age",
    )
    retention_interval: float = Field(
        default=300.0,
        gt=0,
        description="seconds between two retention passes (runs and inbox events) on a worker node",
    )
    retention_min_age: float = Field(
        default=3600.0,
        ge=0,
        description="seconds a finished run or inbox event is kept whatever runs_max_count or "
        "inbox.max_count say (a provider's retry is still recognised, /result still answers)",
    )


class DeliverySettings(Section):
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
    max_backoff: float = Field(
        default=300.0, gt=0, description="longest wait between two attempts of one delivery"
    )
    poll_interval: float = Field(
        default=0.5, gt=0, description="how often the outbox looks for deliveries other nodes made"
    )
    batch: int = Field(default=50, ge=1, description="deliveries one outbox pass takes at most")
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


class InboxSettings(Section):
    max_attempts: int = Field(
        default=5,
        ge=1,
        description="processing attempts of one inbox event (raises, or its processor stopping); "
        "then it is marked failed and the next event of its conversation goes on",
    )
    retry_delay: float = Field(
        default=1.0, gt=0, description="seconds before the first retry; doubled each time"
    )
    retry_delay_max: float = Field(default=300.0, gt=0, description="longest wait between retries")
    lease_seconds: float = Field(
        default=60.0,
        gt=0,
        description="an event whose processor stopped renewing its lease for this long is "
        "processed again (by any worker node)",
    )
    poll_interval: float = Field(
        default=0.5,
        gt=0,
        description="seconds between looks for events other nodes accepted (this node's own are "
        "taken at once)",
    )
    concurrency: int = Field(
        default=32,
        ge=1,
        description="events processed at once by this node (one per conversation at a time)",
    )
    replay_timeout: float = Field(
        default=30.0,
        gt=0,
        description="seconds a replay waits for its event to be processed before it answers",
    )
    max_age_days: float = Field(
        default=14.0,
        gt=0,
        description="finished inbox events (processed, ignored, failed, discarded) older than this "
        "are deleted; pending and held events never are",
    )
    max_count: int = Field(
        default=10_000,
        ge=1,
        description="finished inbox events kept at most (the newest), except those younger than "
        "runtime.retention_min_age",
    )
    body_max_age_days: float = Field(
        default=7.0,
        gt=0,
        description="the stored payload of a finished event is dropped after this long (the row "
        "stays until max_age_days; such an event can no longer be replayed)",
    )
