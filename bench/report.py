"""Markdown for bench/RESULTS.md: the machine, the code measured, tables, one section replaced.

Each benchmark owns one ``## `` section of RESULTS.md and replaces only that one, so a rerun of
one benchmark leaves the others' figures (and the sections other branches add) in place.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import sqlite3
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

RESULTS = REPO / "bench" / "RESULTS.md"


def percentile(samples: list[float], pct: float) -> float:
    """Nearest-rank percentile (for N=30, p99 is the maximum)."""
    if not samples:
        return math.nan
    ordered = sorted(samples)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def fmt_ms(value: float) -> str:
    if math.isnan(value):
        return "-"
    return f"{value:.2f}" if value < 100 else f"{value:.0f}"


def machine_facts() -> list[tuple[str, str]]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory = "unknown"
    with contextlib.suppress(OSError, ValueError, IndexError):
        kib = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0])
        memory = f"{kib / 1024 / 1024:.1f} GiB"
    return [
        ("CPUs (`nproc`)", _command_output(["nproc"]) or str(os.cpu_count())),
        ("CPU model (/proc/cpuinfo)", model),
        ("Memory", memory),
        ("Kernel", platform.release()),
        ("Python", f"{platform.python_version()} ({sys.executable})"),
        ("SQLite library", sqlite3.sqlite_version),
        ("wrk", (_command_output(["wrk", "-v"]) or "unknown").split(" Copyright")[0]),
    ]


def code_version() -> str:
    """The commit measured, and whether files outside bench/ differed from it."""
    head = _command_output(["git", "-C", str(REPO), "rev-parse", "--short=12", "HEAD"])
    if not head:
        return "unknown (not a git checkout)"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        status = subprocess.run(
            [
                "git",
                "-C",
                str(REPO),
                "status",
                "--porcelain",
                "--untracked-files=no",
                "--",
                ".",
                ":(exclude)bench",
            ],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout.splitlines()
        if status:
            return f"git {head} plus uncommitted changes in {len(status)} files outside bench/"
    return f"git {head}"


def _command_output(cmd: list[str]) -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
        lines = (done.stdout or done.stderr).strip().splitlines()
        return lines[0].strip() if lines else ""
    return ""


def row(cells: Sequence[object]) -> str:
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


def table(header: Sequence[str], rows: Sequence[Sequence[object]], right: int = 0) -> list[str]:
    """A Markdown table; the columns from ``right`` on are right-aligned (numbers)."""
    align = ["---" if i < right or not right else "--:" for i in range(len(header))]
    return [row(header), "|" + "|".join(align) + "|", *(row(r) for r in rows)]


def replace_section(text: str, path: Path = RESULTS) -> None:
    """Put ``text`` (which starts with its ``## `` heading) in place of that section of ``path``,
    or at its end when it has none yet."""
    heading = text.split("\n", 1)[0].strip()
    current = path.read_text(encoding="utf-8") if path.exists() else ""
    lines = current.splitlines()
    if heading in lines:
        start = lines.index(heading)
        end = next(
            (i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines)
        )
        lines[start:end] = [*text.rstrip().splitlines(), ""]
        new = "\n".join(lines).rstrip() + "\n"
    else:
        new = current.rstrip() + "\n\n" + text.rstrip() + "\n"
    path.write_text(new, encoding="utf-8")
