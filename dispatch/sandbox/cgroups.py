"""A cgroup per sandboxed run: memory, pids and CPU limits, their events, a kill that misses no one.

Two layouts are supported, found once at start by :func:`detect_cgroups`:

- **v2** (unified, ``/sys/fs/cgroup`` is ``cgroup2``): one directory per run with ``memory.max``,
  ``memory.swap.max = 0``, ``pids.max``, ``cpu.max``; ``memory.events``/``pids.events`` say which
  limit was hit; ``cgroup.kill`` ends every process at once. The parent is
  ``/sys/fs/cgroup/switchboard-<instance>`` (v2 forbids enabling controllers in a cgroup that holds
  processes, such as the server's own).
- **v1 / hybrid** (``memory``, ``pids`` and ``cpu`` as v1 hierarchies): one directory per run in
  each, under the server's own cgroup of that hierarchy; ``memory.memsw.limit_in_bytes`` (when swap
  accounting is on) keeps swap at 0; ``memory.oom_control``'s ``oom_kill`` and ``pids.events``'s
  ``max`` count limit hits. A hybrid host's ``cgroup2`` mount gets a run directory too, only for
  its ``cgroup.kill``; without one, the run's processes are SIGKILLed until ``pids`` says none are
  left (the pids limit bounds how many a fork bomb can make meanwhile).

Every directory is named after the server instance and the run, so the sweep at start removes
exactly what a crashed server of the same data dir left behind, and nothing of another server's.
Writes go to cgroupfs, which lives in kernel memory: they do not block on a disk.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from core.models import WorkflowLimits, format_bytes

logger = logging.getLogger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")
KILL_WAIT_SECONDS = 5.0
WANTED_CONTROLLERS = frozenset({"memory", "pids", "cpu"})


@dataclass(frozen=True, slots=True)
class CgroupLimits:
    memory: int
    """bytes of memory (swap is held at 0)"""
    pids: int
    cpu: float
    """CPUs' worth of time per period (1.5 = one and a half cores)"""


@dataclass(frozen=True, slots=True)
class LimitEvents:
    """How often a run hit its limits so far."""

    oom_kills: int = 0
    pids_max: int = 0


def limit_error(events: LimitEvents, limits: WorkflowLimits) -> str | None:
    """The error that names the limit a run broke, if it broke one."""
    if events.oom_kills:
        return f"memory limit of {format_bytes(limits.memory)} exceeded"
    if events.pids_max:
        return f"process limit of {limits.pids} reached"
    return None


class RunCgroup:
    """The cgroup(s) of one run: join via :attr:`procs_files`, read :meth:`events`, then destroy."""

    def __init__(self, layout: CgroupLayout, name: str) -> None:
        self._layout = layout
        self.directories = [parent / name for parent in layout.parents()]

    @property
    def procs_files(self) -> list[Path]:
        """Write a pid into each of these to put that process (and its future children) here."""
        return [directory / "cgroup.procs" for directory in self.directories]

    def create(self, limits: CgroupLimits) -> None:
        for directory in self.directories:
            directory.mkdir(exist_ok=True)
        self._layout.apply(self, limits)

    def events(self) -> LimitEvents:
        return self._layout.events(self)

    def pids(self) -> list[int]:
        try:
            text = _read(self._layout.pids_directory(self) / "cgroup.procs")
        except FileNotFoundError:  # never made, or removed already
            return []
        return [int(line) for line in text.split()]

    def kill(self) -> None:
        """SIGKILL every process in the cgroup (``cgroup.kill`` where there is one), no waiting."""
        kill_file = self._layout.kill_file(self)
        if kill_file is not None and kill_file.exists():
            with contextlib.suppress(OSError):
                kill_file.write_text("1")
            return
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def destroy(self) -> None:
        """Kill every process in the cgroup, wait until it is empty, remove the directories."""
        kill_file = self._layout.kill_file(self)
        if kill_file is not None and kill_file.exists():
            with contextlib.suppress(OSError):
                kill_file.write_text("1")
        deadline = time.monotonic() + KILL_WAIT_SECONDS
        while pids := self.pids():
            for pid in pids:  # v1 without cgroup.kill, or a process that raced in
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if time.monotonic() > deadline:
                logger.error("cgroup %s still holds %s after SIGKILL", self.directories[0], pids)
                break
            time.sleep(0.005)
        for directory in reversed(self.directories):
            _remove(directory)


class CgroupLayout:
    """Where run cgroups go and which files hold their limits (v1 or v2)."""

    def __init__(self, *, instance: str, version: int, mounts: dict[str, Path]) -> None:
        self.instance = instance
        self.version = version
        self._mounts = mounts

    def describe(self) -> str:
        return f"cgroup v{self.version} ({', '.join(sorted(self._mounts))})"

    def parents(self) -> list[Path]:
        return [self._parent(key) for key in sorted(self._mounts)]

    def run_cgroup(self, run_id: str) -> RunCgroup:
        return RunCgroup(self, f"run-{run_id}")

    def prepare(self) -> None:
        """Create the instance's parent cgroups and remove what a crashed server left in them."""
        for key in sorted(self._mounts):
            parent = self._parent(key)
            parent.mkdir(exist_ok=True)
            if self.version == 2:
                _enable_controllers(parent)
        for stale in {p.name for parent in self.parents() for p in parent.glob("run-*")}:
            logger.warning("removing the stale cgroup %s left by an earlier server", stale)
            RunCgroup(self, stale).destroy()

    def missing_controllers(self) -> list[str]:
        """v2: the controllers the instance's parent cgroup does not hand to its children (a
        run there would get no limits at all, so the sandbox must not start). v1: none."""
        if self.version != 2:
            return []
        parent = self._parent("unified")
        try:
            text = _read(parent / "cgroup.subtree_control")
        except OSError:
            text = ""
        enabled = {name.lstrip("+") for name in text.split()}
        return sorted(WANTED_CONTROLLERS - enabled)

    def release(self) -> None:
        """Remove the instance's (empty) parent cgroups: the server is stopping."""
        for parent in self.parents():
            _remove(parent)

    def apply(self, cgroup: RunCgroup, limits: CgroupLimits) -> None:
        period = 100_000
        quota = max(1000, int(limits.cpu * period))
        if self.version == 2:
            directory = cgroup.directories[0]
            _write(directory / "memory.max", str(limits.memory))
            _write(directory / "memory.swap.max", "0", optional=True)
            _write(directory / "pids.max", str(limits.pids))
            _write(directory / "cpu.max", f"{quota} {period}")
            return
        memory = self._run_dir(cgroup, "memory")
        _write(memory / "memory.limit_in_bytes", str(limits.memory))
        _write(memory / "memory.memsw.limit_in_bytes", str(limits.memory), optional=True)
        _write(self._run_dir(cgroup, "pids") / "pids.max", str(limits.pids))
        cpu = self._run_dir(cgroup, "cpu")
        _write(cpu / "cpu.cfs_period_us", str(period))
        _write(cpu / "cpu.cfs_quota_us", str(quota))

    def events(self, cgroup: RunCgroup) -> LimitEvents:
        if self.version == 2:
            directory = cgroup.directories[0]
            memory = _keyed(directory / "memory.events")
            pids = _keyed(directory / "pids.events")
        else:
            memory = _keyed(self._run_dir(cgroup, "memory") / "memory.oom_control")
            pids = _keyed(self._run_dir(cgroup, "pids") / "pids.events")
        return LimitEvents(oom_kills=memory.get("oom_kill", 0), pids_max=pids.get("max", 0))

    def pids_directory(self, cgroup: RunCgroup) -> Path:
        return self._run_dir(cgroup, "pids" if self.version == 1 else "unified")

    def kill_file(self, cgroup: RunCgroup) -> Path | None:
        if "unified" not in self._mounts:
            return None
        return self._run_dir(cgroup, "unified") / "cgroup.kill"

    def _run_dir(self, cgroup: RunCgroup, key: str) -> Path:
        return self._parent(key) / cgroup.directories[0].name

    def _parent(self, key: str) -> Path:
        mount = self._mounts[key]
        if self.version == 2:
            return mount / f"switchboard-{self.instance}"
        return mount / _own_cgroup(key).lstrip("/") / f"switchboard-{self.instance}"


def detect_cgroups(instance: str, root: Path = CGROUP_ROOT) -> CgroupLayout | str:
    """The host's cgroup layout, or why per-run cgroups cannot be made here."""
    if (root / "cgroup.controllers").exists():
        available = set(_read(root / "cgroup.controllers").split())
        if not WANTED_CONTROLLERS <= available:
            return f"cgroup v2 lacks the controllers {sorted(WANTED_CONTROLLERS - available)}"
        layout = CgroupLayout(instance=instance, version=2, mounts={"unified": root})
    else:
        mounts = {key: root / key for key in ("memory", "pids", "cpu")}
        missing = [key for key, path in mounts.items() if not (path / "cgroup.procs").exists()]
        if missing:
            return f"no cgroup v1 hierarchy for {', '.join(missing)} under {root}"
        unified = root / "unified"
        if (unified / "cgroup.procs").exists() and _own_cgroup("unified") is not None:
            mounts["unified"] = unified
        layout = CgroupLayout(instance=instance, version=1, mounts=mounts)
    try:
        layout.prepare()
    except OSError as exc:
        return f"cannot create cgroups under {root}: {exc.strerror or exc}"
    missing = layout.missing_controllers()
    if missing:
        layout.release()
        return (
            f"cgroup v2 would not enable the {', '.join(missing)} controller(s) for "
            f"{layout.parents()[0]} (is the server's own cgroup the root of a container? "
            "run it in a cgroup that may delegate them)"
        )
    return layout


def _own_cgroup(key: str) -> str:
    """The server's own cgroup path in hierarchy ``key`` (``unified`` is the v2 one)."""
    for line in _read(Path("/proc/self/cgroup")).splitlines():
        _, controllers, path = line.split(":", 2)
        names = controllers.split(",") if controllers else ["unified"]
        if key in names:
            return path
    return "/"


def _enable_controllers(parent: Path) -> None:
    for directory in (parent.parent, parent):
        with contextlib.suppress(OSError):  # already on, or the root's to give
            _write(directory / "cgroup.subtree_control", "+memory +pids +cpu")


def _keyed(path: Path) -> dict[str, int]:
    """``key value`` lines (``memory.events``, ``pids.events``, ``memory.oom_control``)."""
    values: dict[str, int] = {}
    with contextlib.suppress(FileNotFoundError):
        for line in _read(path).splitlines():
            key, _, value = line.partition(" ")
            with contextlib.suppress(ValueError):
                values[key] = int(value)
    return values


def _read(path: Path) -> str:
    return path.read_text(encoding="ascii")


def _write(path: Path, value: str, *, optional: bool = False) -> None:
    try:
        path.write_text(value, encoding="ascii")
    except FileNotFoundError:
        if not optional:
            raise


def _remove(directory: Path) -> None:
    for attempt in range(100):
        try:
            directory.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:  # EBUSY for a moment after the last process exits
            if attempt == 99:
                logger.error("cannot remove the cgroup %s", directory)
                return
            time.sleep(0.01)
