"""Issue 15's proof in CI: ``bench.chaos`` under faults, nothing lost or doubled.

The short form: 90 s of load from every source on the four-node PostgreSQL cluster with at least
8 mixed faults (seed 1), and the SQLite single node killed and restarted under the same load.
Each run is ``python -m bench.chaos`` as a child process (it makes its own network namespaces,
so it needs root); its exit status is the verdict and its output names every violation.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.chaos,
    pytest.mark.skipif(os.geteuid() != 0, reason="bench.chaos makes network namespaces (root)"),
    pytest.mark.skipif(
        not (shutil.which("unshare") and shutil.which("nsenter") and shutil.which("ip")),
        reason="needs unshare, nsenter and ip (util-linux, iproute2)",
    ),
]

RUN_LIMIT = 540


def chaos(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bench.chaos", *args],
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")},
        capture_output=True,
        text=True,
        timeout=RUN_LIMIT,
        check=False,
    )


def verdict(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n{result.stdout}\n--- stderr\n{result.stderr[-20000:]}"


@pytest.mark.postgres
@pytest.mark.timeout(RUN_LIMIT + 60)
def test_four_nodes_under_mixed_faults_lose_and_double_nothing() -> None:
    result = chaos("--duration", "90", "--seed", "1", "--backend", "postgres")
    assert result.returncode == 0, verdict(result)
    faults = [line for line in result.stdout.splitlines() if line.startswith("- +")]
    assert len(faults) >= 8, verdict(result)
    kinds = {line.split()[3] for line in faults}  # "- +12.3 s kill node-2 ..."
    assert len(kinds) >= 4, f"faults of every kind, got {sorted(kinds)}\n{verdict(result)}"
    assert "| lost | 0 |" in result.stdout and "| doubled | 0 |" in result.stdout


@pytest.mark.timeout(RUN_LIMIT + 60)
def test_the_sqlite_node_killed_and_restarted_loses_and_doubles_nothing() -> None:
    result = chaos("--duration", "60", "--seed", "1", "--backend", "sqlite")
    assert result.returncode == 0, verdict(result)
    assert "kill" in result.stdout and "| lost | 0 |" in result.stdout, verdict(result)
