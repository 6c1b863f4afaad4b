"""Summarise a py-spy ``--format raw`` profile (collapsed stacks): top functions by share.

Usage::

    .venv/bin/python -m bench.profile_top PROFILE.txt [--top 25] [--thread-filter TEXT]

Prints, per thread and overall, the functions with the most *self* samples (the frame on top of
the stack) and the most *inclusive* samples (anywhere on the stack, counted once per stack).
``python -m bench.api --profile DIR`` and ``python -m bench.intake --profile DIR`` write such files.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def _name(frame: str) -> str:
    """``func (path/to/module.py:12)`` -> ``func (module.py)``; other frames unchanged."""
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    path = match.group("file")
    parts = Path(path).parts
    short = "/".join(parts[-2:]) if len(parts) >= 2 else path
    if "site-packages" in parts:
        short = "/".join(parts[parts.index("site-packages") + 1 :])
    return f"{match.group('func')} ({short})"


def summarise(path: Path, top: int, thread_filter: str | None) -> str:
    self_counts: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        thread = frames[0] if frames[0].startswith(("thread", "process")) else "all"
        if frames[0].startswith("process"):
            frames = frames[1:]
            thread = frames[0] if frames and frames[0].startswith("thread") else "all"
        if thread_filter and thread_filter not in thread:
            continue
        threads[thread] += count
        total += count
        names = [_name(f) for f in frames if not f.startswith(("thread", "process"))]
        if names:
            self_counts[names[-1]] += count
        for name in set(names):
            inclusive[name] += count
    if not total:
        return f"{path}: no samples"
    out = [f"{path}: {total} samples"]
    out.append(
        "threads: " + ", ".join(f"{t} {100 * c / total:.1f}%" for t, c in threads.most_common())
    )
    out.append(f"\ntop {top} by self samples:")
    out += [f"  {100 * c / total:5.1f}%  {name}" for name, c in self_counts.most_common(top)]
    out.append(f"\ntop {top} by inclusive samples:")
    out += [f"  {100 * c / total:5.1f}%  {name}" for name, c in inclusive.most_common(top)]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--thread-filter", help="only stacks whose thread label contains this")
    args = parser.parse_args()
    print(summarise(args.profile, args.top, args.thread_filter))


if __name__ == "__main__":
    main()
