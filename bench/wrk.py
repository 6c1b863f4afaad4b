"""Running wrk with our Lua scripts, and reading what it printed.

Every script loads bench/counts.lua, whose ``done()`` prints one ``SBBENCH`` line (requests sent,
answers by class, socket errors): wrk's own summary does not say how many requests were still in
flight when it stopped its clock, and the stored-events check needs that.
"""

from __future__ import annotations

import asyncio
import math
import re
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from bench.cpu import CpuUse
from bench.harness import BenchError

BENCH = Path(__file__).resolve().parent
POOL_SCRIPT = BENCH / "pool.lua"
POST_SCRIPT = BENCH / "post.lua"


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


def _duration_ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if not match:
        raise BenchError(f"unparsable wrk duration {text!r}")
    return float(match.group(1)) * _UNITS_MS[match.group(2)]


@dataclass
class WrkResult:
    connections: int
    threads: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    completed: int
    sent: int
    ok: int
    non2xx: int
    socket_errors: dict[str, int]
    stored: int = -1
    raw: str = ""
    cpu: CpuUse = field(default_factory=CpuUse)
    attempt: int = 1
    server_cpu_seconds: float = math.nan  # the server's CPU time (all threads) over the run
    load_average: float = math.nan  # 1-minute load average when the run started

    @property
    def cpu_ms_per_ok(self) -> float:
        """Server CPU per acknowledged request: independent of how much CPU it was given."""
        return 1000 * self.server_cpu_seconds / self.ok if self.ok else math.nan

    @property
    def disturbance(self) -> float:
        """CPU taken by other processes or by the hypervisor (steal), % of one CPU."""
        steal = 0.0 if math.isnan(self.cpu.steal) else self.cpu.steal
        return max(0.0, self.cpu.other) + steal

    @property
    def in_flight(self) -> int:
        return self.sent - self.completed

    @property
    def accepted_per_s(self) -> float:
        # wrk's requests/s uses its exact run time; its "in 10.00s" text is rounded.
        return self.rps * self.ok / self.completed if self.completed else 0.0

    @property
    def errors(self) -> int:
        return sum(self.socket_errors.values())

    def check(self) -> tuple[bool, str]:
        problems = []
        if self.non2xx:
            problems.append(f"{self.non2xx} non-2xx")
        if self.errors:
            problems.append(
                "socket errors " + ", ".join(f"{k}={v}" for k, v in self.socket_errors.items() if v)
            )
        if self.stored < self.ok:
            problems.append(f"{self.ok - self.stored} acknowledged events missing from the store")
        elif self.stored > self.ok + self.in_flight:
            problems.append(f"{self.stored - self.ok - self.in_flight} more stored than sent")
        if problems:
            return False, "; ".join(problems)
        unstored = self.ok + self.in_flight - self.stored
        # A request wrk never saw answered may or may not have been stored: both are correct.
        return True, "ok" if unstored == 0 else f"ok ({unstored} unanswered requests not stored)"


def parse_wrk(output: str, connections: int, threads: int) -> WrkResult:
    def need(pattern: str) -> re.Match[str]:
        match = re.search(pattern, output, re.MULTILINE)
        if not match:
            raise BenchError(f"wrk output lacks {pattern!r}:\n{output}")
        return match

    completed_match = need(r"^\s*(\d+) requests in ([\d.]+\w+),")
    summary = need(r"^SBBENCH (.*)$").group(1)
    counts = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", summary)}
    return WrkResult(
        connections=connections,
        threads=threads,
        seconds=_duration_ms(completed_match.group(2)) / 1000,
        rps=float(need(r"^Requests/sec:\s+([\d.]+)").group(1)),
        p50_ms=_duration_ms(need(r"^\s+50%\s+(\S+)").group(1)),
        p99_ms=_duration_ms(need(r"^\s+99%\s+(\S+)").group(1)),
        completed=int(completed_match.group(1)),
        # wrk calls request() once more on its first thread to check the script (it counts
        # the pipelined requests); that call sends nothing.
        sent=counts["sent"] - 1,
        ok=counts["2xx"],
        non2xx=counts["non2xx"],
        socket_errors={k: counts[k] for k in ("connect", "read", "write", "timeout")},
        raw=output,
    )


def write_pool(path: Path, requests: Iterable[bytes]) -> int:
    """Write raw HTTP requests for bench/pool.lua; return how many."""
    count = 0
    with path.open("wb") as out:
        for raw in requests:
            out.write(b"%d\n" % len(raw))
            out.write(raw)
            count += 1
    return count


def raw_request(host: str, path: str, headers: Mapping[str, str], body: bytes) -> bytes:
    """One HTTP/1.1 POST as wrk sends it (keep-alive is HTTP/1.1's default)."""
    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    return (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\n{head}Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def run_wrk(
    url: str,
    connections: int,
    threads: int,
    seconds: float,
    *,
    script: Path = POOL_SCRIPT,
    env: Mapping[str, str],
    startup: float = 120,
) -> WrkResult:
    """wrk ``--latency`` with one of our scripts; ``startup`` bounds loading a pool beyond
    ``seconds``. ``env`` reaches the script (pools, keys: never argv, which every user sees)."""
    process = await asyncio.create_subprocess_exec(
        *("wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "--latency"),
        *("--timeout", "5s", "-s", str(script), url),
        env={**env, "BENCH_THREADS": str(threads)},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(seconds + startup):
            out, err = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise BenchError(f"wrk ran longer than {seconds + startup:g} s") from None
    if process.returncode != 0:
        raise BenchError(f"wrk failed ({process.returncode}): {err.decode()[-2000:]}")
    return parse_wrk(out.decode(), connections, threads)
