"""Where the CPU went during a measurement: the server, the load generator, the database, the rest.

The machine is small (2 CPUs) and wrk runs on it too; a large *other* or *steal* marks a disturbed
measurement (bench/README.md, "Reading the CPU columns").
"""

from __future__ import annotations

import contextlib
import math
import os
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.harness import log

_TICK = os.sysconf("SC_CLK_TCK")


def _machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies over all CPUs since boot, from /proc/stat."""
    fields = _proc_stat()
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def _proc_stat() -> list[int]:
    """/proc/stat's first line: user nice system idle iowait irq softirq steal ... (jiffies)."""
    return [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]


def process_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads)."""
    with contextlib.suppress(OSError, IndexError, ValueError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICK
    return math.nan


@dataclass
class CpuUse:
    """CPU used during a measurement, in % of one CPU (200% = both CPUs of a 2-CPU machine)."""

    server: float = math.nan
    load_generator: float = math.nan
    database: float = 0.0  # the PostgreSQL server's processes; SQLite runs inside the server
    machine: float = math.nan
    steal: float = math.nan  # time the hypervisor gave our virtual CPUs to someone else
    iowait: float = math.nan  # idle time with disk I/O outstanding

    @property
    def other(self) -> float:
        """Everything else: other processes, the kernel's own work."""
        steal = 0.0 if math.isnan(self.steal) else self.steal
        return self.machine - self.server - self.load_generator - self.database - steal


class CpuMeter:
    """Measures the server's, the load generator's (our children) and the machine's CPU use."""

    def __init__(self, server_pid: int, database_pids: Callable[[], list[int]]) -> None:
        self.server_pid = server_pid
        self.database_pids = database_pids

    def _database_seconds(self) -> dict[int, float]:
        return {pid: process_seconds(pid) for pid in self.database_pids()}

    def __enter__(self) -> CpuMeter:
        self._wall = time.monotonic()
        self._server = process_seconds(self.server_pid)
        self._database = self._database_seconds()
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        self._children = children.ru_utime + children.ru_stime
        self._machine = _machine_ticks()
        self._stat = _proc_stat()
        self.use = CpuUse()
        return self

    def __exit__(self, *exc: object) -> None:
        wall = time.monotonic() - self._wall
        if wall <= 0:
            return
        busy, total = _machine_ticks()
        cpus = os.cpu_count() or 1
        share = (busy - self._machine[0]) / max(1, total - self._machine[1])
        stat = [now - then for now, then in zip(_proc_stat(), self._stat, strict=False)]
        jiffies = max(1, sum(stat))
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        database = self._database_seconds()
        # Processes that started during the measurement count from zero; ended ones are lost.
        database_used = sum(
            used - self._database.get(pid, 0.0)
            for pid, used in database.items()
            if not math.isnan(used)
        )
        self.use = CpuUse(
            server=100 * (process_seconds(self.server_pid) - self._server) / wall,
            load_generator=100 * (children.ru_utime + children.ru_stime - self._children) / wall,
            database=100 * database_used / wall,
            machine=100 * share * cpus,
            steal=100 * cpus * stat[7] / jiffies if len(stat) > 7 else math.nan,
            iowait=100 * cpus * stat[4] / jiffies,
        )


def postgres_pids(port: int) -> list[int]:
    """The postmaster listening on ``port`` (found by its command line) and its children."""
    postmaster = None
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            pid = int(entry.name)
            parents[pid] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            if argv[0].endswith(b"/postgres") and f"port={port}".encode() in argv:
                postmaster = pid
    if postmaster is None:
        return []
    return [postmaster, *(pid for pid, parent in parents.items() if parent == postmaster)]


def machine_busy(seconds: float = 2.0) -> float:
    """% of one CPU the whole machine used over ``seconds`` (before we start anything)."""
    before = _machine_ticks()
    time.sleep(seconds)
    after = _machine_ticks()
    return 100 * (os.cpu_count() or 1) * (after[0] - before[0]) / max(1, after[1] - before[1])


def wait_until_idle(limit: float) -> float:
    """Wait up to ``limit`` s for a quiet machine; return the last busy figure (% of one CPU)."""
    deadline = time.monotonic() + limit
    busy = machine_busy(2.0)
    while busy > 15 and time.monotonic() < deadline:
        log(f"machine busy ({busy:.0f}% of one CPU); waiting for it to be idle")
        time.sleep(3)
        busy = machine_busy(2.0)
    return busy
