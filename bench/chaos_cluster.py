"""The chaos cluster: PostgreSQL (or one SQLite node) and Switchboard nodes in their namespaces.

Shapes (issue 15): ``split`` is two ``web,worker`` nodes, one ``worker``, one ``scheduler``;
``all`` is four nodes with every role; ``single`` is one node with every role on SQLite. Every
node listens on its own address, port 8000 (its namespace is its own); PostgreSQL listens on the
hub address with ``synchronous_commit = on``, so an immediate shutdown keeps every commit it
acknowledged (the throwaway's speed settings would lose the last ones and blame us).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from bench.chaos_net import HUB_ADDRESS, NodeNamespace
from bench.chaos_sinks import Sinks
from bench.harness import Store, clean_environ, cli, create_key
from tests.e2e.harness import ServerProcess
from tests.fakes.twilio_api import AUTH_TOKEN
from tests.pgserver import ThrowawayPostgres

Shape = Literal["split", "all", "single"]
ROLES: dict[Shape, tuple[str, ...]] = {
    "split": ("web,worker", "web,worker", "worker", "scheduler"),
    "all": ("web,worker,scheduler",) * 4,
    "single": ("web,worker,scheduler",),
}
PORT = 8000
SMTP_PORT = 2525
PUBLIC_URL = "http://switchboard.chaos.test"
"""Every node's ``public_url``: Twilio signs the URL it calls, which is the load balancer's."""
SLACK_SECRET = "chaos-signing-secret-0123456789abcdef"
TWILIO_TOKEN = AUTH_TOKEN
"""The fake Twilio's own token: it checks our Basic auth with it, we check its signatures."""
DOMAIN = "chaos.test"
BOT_ADDRESS = f"bot@{DOMAIN}"
BOOT_LIMIT = 180.0
"""Seconds a node may take to answer /healthz: four interpreters booting at once on 2 cores."""
LEASE = 4.0
"""Run, inbox and delivery leases (s): short, so that a killed node's work moves on quickly."""


def node_settings(sinks: Sinks, node: NodeNamespace, data_dir: Path) -> dict[str, str]:
    """Every setting of one node; secrets through the environment, never argv."""
    return {
        "SWITCHBOARD_SERVER__DATA_DIR": str(data_dir),
        "SWITCHBOARD_SERVER__PORT": str(PORT),
        "SWITCHBOARD_SERVER__PUBLIC_URL": PUBLIC_URL,
        "SWITCHBOARD_SERVER__LOG_LEVEL": "WARNING",
        "SWITCHBOARD_RUNTIME__SANDBOX": "process",
        "SWITCHBOARD_RUNTIME__REGISTER_EXAMPLES": "false",
        "SWITCHBOARD_RUNTIME__POLL_INTERVAL": "0.2",
        "SWITCHBOARD_RUNTIME__LEASE_SECONDS": str(LEASE),
        "SWITCHBOARD_RUNTIME__MAX_ATTEMPTS": "50",
        "SWITCHBOARD_RUNTIME__SHUTDOWN_GRACE": "2",
        "SWITCHBOARD_INBOX__LEASE_SECONDS": str(LEASE),
        "SWITCHBOARD_INBOX__POLL_INTERVAL": "0.2",
        "SWITCHBOARD_INBOX__MAX_ATTEMPTS": "50",
        "SWITCHBOARD_INBOX__RETRY_DELAY_MAX": "2",
        "SWITCHBOARD_DELIVERY__LEASE_SECONDS": str(LEASE),
        "SWITCHBOARD_DELIVERY__POLL_INTERVAL": "0.2",
        "SWITCHBOARD_DELIVERY__MAX_ATTEMPTS": "200",
        "SWITCHBOARD_DELIVERY__MAX_BACKOFF": "2",
        "SWITCHBOARD_DELIVERY__ALLOW_HOSTS": json.dumps([f"{HUB_ADDRESS}/32"]),
        "SWITCHBOARD_SLACK__SIGNING_SECRET": SLACK_SECRET,
        "SWITCHBOARD_SLACK__BOT_TOKEN": "xoxb-chaos",
        "SWITCHBOARD_SLACK__API_URL": sinks.slack.api_url,
        "SWITCHBOARD_SLACK__WORKFLOW": "echo",
        "SWITCHBOARD_SLACK__CHANNEL_INTERVAL": "0",
        "SWITCHBOARD_WHATSAPP__ACCOUNT_SID": sinks.twilio.account_sid,
        "SWITCHBOARD_WHATSAPP__AUTH_TOKEN": TWILIO_TOKEN,
        "SWITCHBOARD_WHATSAPP__API_URL": sinks.twilio.url,
        "SWITCHBOARD_WHATSAPP__WORKFLOW": "echo",
        "SWITCHBOARD_WHATSAPP__SEND_TIMEOUT": "3",
        "SWITCHBOARD_EMAIL__SMTP_PORT": str(SMTP_PORT),
        "SWITCHBOARD_EMAIL__SMTP_HOST": node.address,
        "SWITCHBOARD_EMAIL__DOMAINS": json.dumps([DOMAIN]),
        "SWITCHBOARD_EMAIL__WORKFLOW": "echo",
        "SWITCHBOARD_EMAIL__RELAY_URL": sinks.smtp.url,
        "SWITCHBOARD_EMAIL__AUTO_REPLIES_PER_HOUR": "100000",
        "SWITCHBOARD_SCHEDULER__POLL_INTERVAL": "0.5",
    }


@dataclass
class Node:
    name: str
    roles: str
    namespace: NodeNamespace
    env: dict[str, str]
    log_dir: Path
    process: ServerProcess | None = None
    starts: int = 0
    faulted: bool = False
    """A fault has this node (killed and restarting, or cut off): no second fault takes it."""
    events: list[tuple[float, str]] = field(default_factory=list)

    @property
    def address(self) -> str:
        return self.namespace.address

    @property
    def url(self) -> str:
        return f"http://{self.address}:{PORT}"

    @property
    def is_web(self) -> bool:
        return "web" in self.roles

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.popen.poll() is None

    def start(self) -> ServerProcess:
        self.starts += 1
        self.process = ServerProcess(
            f"{self.name}-{self.starts}",
            self.env,
            PORT,
            self.log_dir,
            args=("--role", self.roles, "--host", self.address),
            host=self.address,
            wrapper=self.namespace.wrapper,
        )
        self.events.append((time.monotonic(), "start"))
        return self.process

    async def start_ready(self, timeout: float = 90) -> None:
        await self.start().wait_ready(timeout)
        self.events.append((time.monotonic(), "ready"))

    def kill(self) -> None:
        if self.process is not None:
            self.process.popen.kill()
            self.process.popen.wait(10)
            self.events.append((time.monotonic(), "killed"))

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()


@dataclass
class Cluster:
    shape: Shape
    store: Store
    nodes: list[Node]
    pg: ThrowawayPostgres | None
    key: str = ""

    @property
    def web_nodes(self) -> list[Node]:
        return [node for node in self.nodes if node.is_web]

    async def start(self) -> None:
        """Migrate once, make the key, then boot every node at once.

        Booting one node after another took four boot times on the loaded 2-core box (a node
        waits on its interpreter's imports far more than on the database); concurrent migrations
        would race, so the schema is brought up to date first and each node finds it current.
        """
        env = self.nodes[0].env
        await cli(self.store, env, "db", "upgrade")
        self.key = await create_key(self.store, env)
        await asyncio.gather(*(node.start_ready(BOOT_LIMIT) for node in self.nodes))

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def make_cluster(
    shape: Shape,
    work: Path,
    sinks: Sinks,
    namespaces: list[NodeNamespace],
    pg: ThrowawayPostgres | None,
) -> Cluster:
    shared = {
        **clean_environ(),
        "PYTHONUNBUFFERED": "1",
        "SWITCHBOARD_SERVER__SECRET_KEY": secrets.token_urlsafe(32),
        "SWITCHBOARD_SERVER__SECRETS_KEY": secrets.token_urlsafe(32),
    }
    if pg is not None:
        pg.create_database("chaos")
        store = Store("postgres", work / "node-1", pg.url("chaos"), pg.dsn("chaos"))
    else:
        store = Store("sqlite", work / "node-1")
    nodes: list[Node] = []
    for index, (roles, namespace) in enumerate(zip(ROLES[shape], namespaces, strict=True), 1):
        data_dir = work / f"node-{index}"
        data_dir.mkdir(parents=True, exist_ok=True)
        env = {**shared, **node_settings(sinks, namespace, data_dir)}
        if store.url is not None:
            env["SWITCHBOARD_SERVER__DATABASE_URL"] = store.url
        nodes.append(Node(f"n{index}", roles, namespace, env, work))
    return Cluster(shape, store, nodes, pg)


async def leader_of(nodes: list[Node]) -> str | None:
    """The name of the node whose /healthz says ``"scheduler": "leader"`` (None: no leader)."""

    async def role(node: Node) -> str | None:
        if not node.alive or node.process is None:
            return None
        try:
            response = await asyncio.wait_for(node.process.health(), 2)
        except (AssertionError, TimeoutError):
            return None
        if response is None or response.status_code != 200:
            return None
        value: str | None = response.json().get("scheduler")
        return value

    roles = await asyncio.gather(*(role(node) for node in nodes))
    leaders = [node.name for node, value in zip(nodes, roles, strict=True) if value == "leader"]
    return leaders[0] if leaders else None


def env_with(base: Mapping[str, str], **extra: str) -> dict[str, str]:
    return {**base, **extra}
