"""Choose the workflow runner: the bubblewrap sandbox where it works, else the plain one, loudly."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from contextlib import AsyncExitStack
from pathlib import Path

from core.errors import SwitchboardError
from core.ports import WorkflowRunner
from dispatch.sandbox.bwrap import SandboxSettings, probe_sandbox
from dispatch.sandbox.cgroups import detect_cgroups
from dispatch.sandbox.process_runner import ProcessRunner
from dispatch.sandbox.sandbox_runner import SandboxRunner
from dispatch.sandbox.seccomp import run_filter
from dispatch.sandbox.warm_pool import WarmPool
from dispatch.sandbox.zygote_pool import ZygotePool
from switchboard.datadir import claim_directory
from switchboard.services import Services

logger = logging.getLogger(__name__)

LOOPBACK_FOR = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}  # noqa: S104 - mapping only


class SandboxUnavailable(SwitchboardError):
    """runtime.sandbox = "bwrap", but this host cannot make sandboxes."""

    def __init__(self, problem: str) -> None:
        super().__init__(
            f"runtime.sandbox = 'bwrap' but the sandbox is unavailable here: {problem}. Install "
            "bubblewrap (and slirp4netns), allow user namespaces and writable cgroups, or set "
            "runtime.sandbox = 'auto' (falls back to no isolation, loudly) or 'process'"
        )


class ConfiguredRunner:
    """The runner ``runtime.sandbox`` asks for, if this host can give it (a
    ``core.channels.Component``): chosen when it starts, with its pools (for /healthz)."""

    def __init__(self, services: Services) -> None:
        self._services = services
        self._runner: WorkflowRunner | None = None
        self.mode = services.settings.runtime.sandbox
        """``bwrap`` or ``process`` once started: what /healthz reports."""
        self.problem: str | None = None
        """Why ``bwrap`` was asked for but ``process`` is used."""
        self.zygotes: ZygotePool | None = None
        """Running zygotes (``runtime.zygote``), counted by /healthz."""
        self.warm: WarmPool | None = None
        """Kept warm processes (``warm = true`` workflows), counted by /healthz."""

    @property
    def runner(self) -> WorkflowRunner:
        if self._runner is None:
            raise RuntimeError("the workflow runner is chosen when it starts")
        return self._runner

    async def start(self, stack: AsyncExitStack) -> None:
        services = self._services
        settings = services.settings
        await asyncio.to_thread(claim_directory, services.socket_dir, 0o700)
        await asyncio.to_thread(_sweep_sockets, services.socket_dir)
        plain = ProcessRunner(
            socket_dir=services.socket_dir,
            startup_timeout=settings.runtime.startup_timeout,
            base_env=services.workflow_env(),
        )
        if settings.runtime.sandbox == "process":
            logger.warning(
                "sandbox = 'process': workflows run as plain processes without isolation; "
                "use only workflows you trust"
            )
            self._runner, self.mode = plain, "process"
            return
        # Traversable by the sandbox uid (its run dirs inside are 0700, chowned to it).
        await asyncio.to_thread(claim_directory, services.runs_dir, 0o711)
        if settings.runtime.zygote:
            await asyncio.to_thread(claim_directory, zygotes_dir(services), 0o711)
        problem = await asyncio.to_thread(
            probe_sandbox, settings.runtime.sandbox_uid, services.runs_dir
        )
        seccomp = None
        if problem is None:
            try:
                seccomp = await asyncio.to_thread(run_filter)
            except OSError as exc:
                problem = str(exc)
        cgroups = None
        if problem is None:
            found = await asyncio.to_thread(detect_cgroups, services.instance)
            if isinstance(found, str):
                problem = found
            else:
                cgroups = found
        if problem is not None or cgroups is None or seccomp is None:
            for unused in (services.runs_dir, zygotes_dir(services)):
                await asyncio.to_thread(_remove_empty, unused)
            if settings.runtime.sandbox == "bwrap":
                # Asked for isolation explicitly: running other people's code without it would be
                # a silent downgrade. Only "auto" may fall back.
                raise SandboxUnavailable(str(problem))
            logger.error(
                "SANDBOX UNAVAILABLE: %s. Falling back to sandbox = 'process': workflows run "
                "WITHOUT isolation or limits. Install bubblewrap (and slirp4netns) and allow user "
                "namespaces, or set runtime.sandbox = 'process' to silence this (or 'bwrap' to "
                "refuse to start).",
                problem,
            )
            self._runner, self.mode, self.problem = plain, "process", problem
            return
        host = settings.server.host
        sandbox = SandboxSettings(
            uid=settings.runtime.sandbox_uid,
            runs_dir=services.runs_dir,
            runtime_address=(LOOPBACK_FOR.get(host, host), settings.server.port),
            startup_timeout=settings.runtime.startup_timeout,
            cgroups=cgroups,
            zygote_cap=settings.runtime.zygote_cap,
            network_allow=tuple(settings.runtime.network_allow),
        )
        logger.info("sandbox = 'bwrap' as uid %s, %s", sandbox.uid, cgroups.describe())
        zygotes = None
        if settings.runtime.zygote:
            zygotes = ZygotePool(sandbox, zygotes_dir(services))
            await asyncio.to_thread(zygotes.sweep)
        warm = None
        if settings.runtime.warm_cap > 0:
            warm = WarmPool(idle_ttl=settings.runtime.warm_idle_ttl, cap=settings.runtime.warm_cap)
        runner = SandboxRunner(
            sandbox, base_env=services.workflow_env(), zygotes=zygotes, warm=warm, seccomp=seccomp
        )
        self._runner, self.mode, self.zygotes, self.warm = runner, "bwrap", zygotes, warm

        async def close() -> None:  # the workers have stopped: only warm processes are left
            await runner.close()
            if zygotes is not None:
                await zygotes.close()
            await asyncio.to_thread(cgroups.release)
            await asyncio.to_thread(_remove_empty, services.runs_dir)

        stack.push_async_callback(close)


def zygotes_dir(services: Services) -> Path:
    return services.runs_dir.with_name(services.runs_dir.name + "-z")


def _sweep_sockets(socket_dir: Path) -> None:
    """Remove the run sockets a crashed server of this data dir left (its runs' processes died
    with it: PDEATHSIG); cgroups and run dirs are swept by the sandbox itself."""
    if socket_dir.is_dir():
        for stale in socket_dir.glob("*.sock"):
            logger.warning("removing the stale run socket %s", stale)
            stale.unlink(missing_ok=True)


def _remove_empty(directory: Path) -> None:
    with contextlib.suppress(OSError):
        directory.rmdir()
