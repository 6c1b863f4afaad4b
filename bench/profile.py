"""py-spy attached to a server for the length of a load (``.venv/bin/pip install py-spy``).

Writes collapsed stacks (``--format raw``); ``python -m bench.profile_top FILE`` summarises them.
Sampling slows the server: figures measured under a profile are not reported as results.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from bench.harness import BenchError, log


def py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(found).is_file():
        raise BenchError("--profile needs py-spy: .venv/bin/pip install py-spy")
    return found


@contextlib.contextmanager
def recording(pid: int, out: Path | None) -> Iterator[None]:
    """Sample ``pid`` at 200 Hz while the block runs; nothing when ``out`` is None."""
    if out is None:
        yield
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    recorder = subprocess.Popen(
        [
            *(py_spy(), "record", "--pid", str(pid), "--rate", "200", "--format", "raw"),
            *("--output", str(out), "--nonblocking"),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        recorder.send_signal(signal.SIGINT)  # py-spy writes its profile on Ctrl-C
        try:
            recorder.wait(60)
        except subprocess.TimeoutExpired:
            recorder.kill()
            recorder.wait(10)
        log(f"profile written to {out}")
