"""Run-path stage marks: where a run's milliseconds go, for the benchmark only.

Off by default, and then each mark costs one attribute test. ``bench/run_path.py`` switches it on
in the server process it starts (never a setting: it changes nothing a user sees) and reads the
stages back per run: intake queued/committed, claimed, executed, completed, the waiter woken, the
answer. Marks keep their order per run; a stage marked twice keeps its first time.
"""

from __future__ import annotations

import time
from collections import defaultdict


class RunTrace:
    """Monotonic timestamps (ns) of named stages per run id."""

    def __init__(self) -> None:
        self.enabled = False
        self._marks: defaultdict[str, dict[str, int]] = defaultdict(dict)

    def enable(self) -> None:
        self.enabled = True

    def mark(self, run_id: str, stage: str, at: int | None = None) -> None:
        """Note that ``run_id`` reached ``stage`` now (or at ``at``, a ``perf_counter_ns``)."""
        if self.enabled:
            self._marks[run_id].setdefault(stage, time.perf_counter_ns() if at is None else at)

    def marks(self) -> dict[str, dict[str, int]]:
        """Every run's stages so far (a copy)."""
        return {run_id: dict(stages) for run_id, stages in self._marks.items()}


TRACE = RunTrace()
"""The process's one trace (a module-level switch: nothing on the run path passes it around)."""
