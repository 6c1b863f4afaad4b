"""What the sandbox tests share besides fixtures: the runner's settings and looks into /proc."""

from __future__ import annotations

import uuid
from pathlib import Path

from dispatch.sandbox.bwrap import SandboxSettings, probe_sandbox
from dispatch.sandbox.cgroups import CgroupLayout, detect_cgroups

SANDBOX_UID = 65534


def host_sandbox_or_problem() -> tuple[Path, CgroupLayout] | str:
    """A runs directory and cgroups of their own for sandboxes, or why this host cannot make any."""
    instance = f"test-{uuid.uuid4().hex[:8]}"
    runs_dir = Path("/tmp") / f"sb-{instance}-runs"
    problem = probe_sandbox(SANDBOX_UID, runs_dir)
    found = detect_cgroups(instance) if problem is None else problem
    return found if isinstance(found, str) else (runs_dir, found)


def sandbox_settings_for(runs_dir: Path, cgroups: CgroupLayout) -> SandboxSettings:
    """The runner's settings for these tests (no live server: the runtime address is a dummy)."""
    return SandboxSettings(
        uid=SANDBOX_UID,
        runs_dir=runs_dir,
        runtime_address=("127.0.0.1", 9),
        startup_timeout=30,
        cgroups=cgroups,
    )


def processes_with(marker: str) -> list[int]:
    """Host pids whose command line contains ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if marker.encode() in cmdline:
                found.append(int(entry.name))
    return found


def processes_with_in_environ(needle: str) -> list[int]:
    """Host pids whose environment, as they were started, contains ``needle`` (read as root)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                environ = (entry / "environ").read_bytes()
            except OSError:
                continue
            if needle.encode() in environ:
                found.append(int(entry.name))
    return found


def zygotes_only(pids: list[int]) -> list[int]:
    """The zygote interpreters among ``pids`` of processes naming ``zygote_server.py``: not the
    bwrap chain that started them, nor the keepers and pids 1 forked from them (those keep the
    zygote's command line, and a live run's pid 1 holds its secrets)."""
    interpreters = {pid for pid in pids if "python" in _program(pid)}
    return [pid for pid in interpreters if parent_of(pid) not in interpreters]


def _program(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0", 1)[0].decode(errors="replace")
    except OSError:
        return ""


def parent_of(pid: int) -> int | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text(encoding="ascii")
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("PPid:"):
            return int(line.split()[1])
    return None


def memory_contains(pid: int, needle: bytes) -> bool:
    """Whether any readable mapping of process ``pid`` holds ``needle`` (read as root)."""
    with open(f"/proc/{pid}/maps", encoding="ascii") as maps, open(f"/proc/{pid}/mem", "rb") as mem:
        for line in maps:
            fields = line.split()
            if "r" not in fields[1] or (len(fields) > 5 and fields[5] == "[vsyscall]"):
                continue
            start, end = (int(part, 16) for part in fields[0].split("-"))
            try:
                mem.seek(start)
                if needle in mem.read(end - start):
                    return True
            except OSError:  # [vvar] and other unreadable mappings
                continue
    return False
