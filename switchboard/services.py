"""Wiring: every shared component built from the settings, once, and started in dependency order.

The server (``switchboard.app``) and the CLI use the same wiring, so a CLI command works on the same
data dir and database as the server, whether or not the server is running.

Lifecycle lives in the components (``core.channels.Component``: ``start(stack)`` registers its
own teardown), so :func:`start_services` is a list of starts on the caller's stack.
:class:`Services` is only what the HTTP handlers, the CLI commands and the roles' starts reach:
ports and stores, nothing to start or stop. A frozen container rather than app keys, because the
CLI has no application; what only one role uses (the run log writer, the inbox queue, the
in-flight secrets, the workers, the scheduler node) is built by that role in ``switchboard.app``.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import sys
import tempfile
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from core.channels import Channel
from core.clock import Clock, SystemClock
from core.db import Database
from core.errors import SecretsUnreadable
from core.ports import BuiltinService, Metrics, NullMetrics, Sender
from core.security import Signer
from dispatch.builtins import builtin_services
from dispatch.environments import EnvironmentBuilder
from dispatch.events import RunEvents
from dispatch.gateway import QueueGateway
from dispatch.history import RunHistoryReader
from dispatch.inbox_store import InboxStore
from dispatch.inbox_writer import InboxWriter
from dispatch.intake import IntakeWriter
from dispatch.outbox import Outbox, OwnMessages, ReplyWriter
from dispatch.queue import RunQueue
from dispatch.registry import WorkflowInfo, WorkflowRegistry
from dispatch.run_environment import unset_declarations
from dispatch.secret_store import SecretStore
from scheduler.builtin import SCHEDULE_RUNS, schedule_runs_service
from scheduler.service import ScheduleService
from scheduler.store import ScheduleStore
from switchboard.channels import ChannelParts, LateParts
from switchboard.config import signing_secret
from switchboard.datadir import prepare_data_dir
from switchboard.migrate import upgrade
from switchboard.secret_keys import load_key_ring
from switchboard.settings import Settings
from triggers.auth import Authenticator, KeyStore
from triggers.egress import guarded_client
from triggers.email.send_email import SendEmailService
from triggers.files import FileStore
from triggers.secrets_api import MANAGE_USER_SECRETS
from triggers.webhook import WebhookSender

logger = logging.getLogger(__name__)

# What a workflow process gets besides its own variables (DESIGN §5): nothing of the server's.
WORKFLOW_BASE_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "PYTHONUNBUFFERED": "1",
}


@dataclass(frozen=True, slots=True)
class Services:
    settings: Settings
    database: Database
    clock: Clock
    signer: Signer
    events: RunEvents
    queue: RunQueue
    registry: WorkflowRegistry
    builtins: Mapping[str, BuiltinService]
    keys: KeyStore
    auth: Authenticator
    files: FileStore
    gateway: QueueGateway
    metrics: Metrics
    outbox: Outbox
    replies: ReplyWriter
    schedules: ScheduleService
    secrets: SecretStore
    """the secret store: ``core.ports.SecretValues`` for runs, ``SecretsManager`` for the rest"""
    inbox: InboxStore
    """``core.inbox.Inbox`` for the edges, ``InboxAdmin`` for the operators."""
    channels: list[Channel]
    """The configured channels, started (their senders are the outbox's)."""

    async def unset_secret_warnings(self, info: WorkflowInfo, owner_id: str) -> list[str]:
        """One warning per name ``info`` declares that has no value (nor default) for
        ``owner_id`` yet: registering still succeeds, but its runs fail until it is set."""
        try:
            missing = await unset_declarations(
                self.secrets,
                owner_id=owner_id,
                service_id=info.service_id,
                declared=info.declared_env,
            )
        except SecretsUnreadable as exc:
            return [f"warning: cannot check the secrets workflow {info.service_id} declares: {exc}"]
        return [
            f"warning: workflow {info.service_id} declares {name}, which is not set for owner "
            f"{owner_id}: its runs fail until it is (switchboard secrets set {name})"
            for name in missing
        ]

    @property
    def instance(self) -> str:
        """Tells this server's sockets, run dirs and cgroups from other servers' on the host."""
        return hashlib.sha256(str(self.settings.server.data_dir.resolve()).encode()).hexdigest()[
            :10
        ]

    @property
    def socket_dir(self) -> Path:
        # Unix socket paths are limited to 107 bytes: keep them out of a deep data dir.
        return Path(tempfile.gettempdir()) / f"switchboard-{self.instance}"

    @property
    def runs_dir(self) -> Path:
        """Sandboxed runs' directories: traversable by the sandbox user, so not in socket_dir."""
        return Path(tempfile.gettempdir()) / f"switchboard-{self.instance}-runs"

    def workflow_env(self) -> dict[str, str]:
        return {
            **WORKFLOW_BASE_ENV,
            "HOME": str((self.settings.server.data_dir / "home").resolve()),
        }


def webhook_secret(settings: Settings, signer: Signer) -> bytes:
    """The configured webhook secret, else one derived from the server secret."""
    if settings.delivery.webhook_secret is not None:
        return settings.delivery.webhook_secret.get_secret_value().encode()
    return signer.sign("webhook-secret").encode()


def tool_env() -> dict[str, str]:
    """Environment for uv: the server's, less Switchboard's own (possibly secret) variables."""
    return {key: value for key, value in os.environ.items() if not key.startswith("SWITCHBOARD_")}


@asynccontextmanager
async def open_services(
    settings: Settings, *, migrate: bool = True, metrics: Metrics | None = None
) -> AsyncIterator[Services]:
    """:func:`start_services` on a stack of its own, for the CLI and tests: no channel starts."""
    async with contextlib.AsyncExitStack() as stack:
        yield await start_services(settings, stack, migrate=migrate, metrics=metrics)


async def start_services(
    settings: Settings,
    stack: contextlib.AsyncExitStack,
    *,
    migrate: bool = True,
    metrics: Metrics | None = None,
    channels: Sequence[Channel] = (),
    parts: LateParts | None = None,
    database_wait: float = 0.0,
) -> Services:
    """Every shared component, started on ``stack`` (stopped in reverse when it closes).
    ``channels`` start once ``parts`` has what they are built from; their senders join the
    outbox's. ``database_wait``: seconds to wait for an unreachable database (``serve``'s
    ``server.database_wait``; the CLI's commands say at once that it is down)."""
    data_dir = settings.server.data_dir
    prepare_data_dir(data_dir, settings.server.resolved_database_url())
    database = Database(
        settings.server.resolved_database_url(),
        sqlite_synchronous=settings.server.sqlite_synchronous,
    )
    await database.start(stack)
    await database.wait_until_reachable(database_wait)
    if migrate:
        await upgrade(database)
    clock = SystemClock()
    signer = Signer(signing_secret(settings))
    events = RunEvents()
    http = await stack.enter_async_context(httpx.AsyncClient(follow_redirects=False))
    destinations = settings.delivery.destinations()
    webhooks = await stack.enter_async_context(guarded_client(destinations))
    files = FileStore(
        database,
        clock,
        signer,
        settings.files,
        directory=(data_dir / "files").resolve(),
        base_url=settings.server.base_url(),
    )
    builtins: dict[str, BuiltinService] = {
        **builtin_services(),
        "send_email": SendEmailService(settings.email, OwnMessages(database, clock), files),
    }
    queue = RunQueue(
        database,
        clock,
        lease_seconds=settings.runtime.lease_seconds,
        max_attempts=settings.runtime.max_attempts,
        per_workflow_limit=settings.runtime.per_workflow_limit,
        per_owner_limit=settings.runtime.per_owner_limit,
    )
    registry = WorkflowRegistry(
        database,
        clock,
        EnvironmentBuilder(
            env_dir=settings.env_dir(),
            uv_cache_dir=settings.uv_cache_dir(),
            python=Path(sys.executable),
            base_env=tool_env(),
        ),
        workflows_dir=(data_dir / "workflows").resolve(),
        reserved=frozenset([*builtins, SCHEDULE_RUNS, MANAGE_USER_SECRETS]),
        default_limits=settings.runtime.limits,
    )
    keys = KeyStore(database, clock)
    metrics = metrics or NullMetrics()
    senders: dict[str, Sender] = {
        "webhook": WebhookSender(webhooks, webhook_secret(settings, signer), clock, destinations),
    }
    outbox = Outbox(database, clock, senders, metrics, settings.delivery)
    inbox_writer = InboxWriter(database)
    intake = IntakeWriter(database, clock, inbox_writer, claims=queue)
    gateway = QueueGateway(
        database,
        intake,
        queue,
        registry,
        builtins,
        events,
        metrics,
        poll_interval=settings.runtime.poll_interval,
    )
    schedules = ScheduleService(
        ScheduleStore(database, RunHistoryReader(database)),
        gateway,
        clock,
        ensure_owner=keys.ensure_owner,
        destinations=destinations,
    )
    builtins[SCHEDULE_RUNS] = schedule_runs_service(schedules)
    inbox = InboxStore(
        database,
        clock,
        inbox_writer,
        gateway.accept,
        replay_timeout=settings.inbox.replay_timeout,
        poll_interval=settings.inbox.poll_interval,
    )
    parts = parts if parts is not None else LateParts()
    secrets = SecretStore(database, clock, lambda: load_key_ring(settings))
    parts.parts = ChannelParts(
        settings=settings,
        database=database,
        clock=clock,
        signer=signer,
        http=http,
        files=files,
        inbox=inbox,
        gateway=gateway,
        history=RunHistoryReader(database),
        secrets=secrets,
    )
    if migrate and (problem := await secrets.check_keys()) is not None:
        logger.warning("secrets: %s", problem)
    await gateway.start(stack)
    # Channels start once the intake's group commit runs: an SMTP listener accepts at once.
    for channel in channels:
        await channel.start(stack)
        for trigger in channel.processors:
            inbox.register(trigger, channel.health)
        if channel.sender is not None:  # the outbox reads its registry when it sends
            senders[channel.name] = channel.sender
    return Services(
        settings=settings,
        database=database,
        clock=clock,
        signer=signer,
        events=events,
        queue=queue,
        registry=registry,
        builtins=builtins,
        keys=keys,
        auth=Authenticator(
            keys,
            signer,
            clock,
            runs=RunHistoryReader(database),
            cache_seconds=settings.server.auth_cache_seconds,
        ),
        files=files,
        gateway=gateway,
        metrics=metrics,
        outbox=outbox,
        replies=ReplyWriter(
            channels=lambda: outbox.channels, failure_line=settings.delivery.failure_line
        ),
        schedules=schedules,
        secrets=secrets,
        inbox=inbox,
        channels=list(channels),
    )
