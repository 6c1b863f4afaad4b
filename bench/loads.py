"""One wrk load against one target: the requests built (and signed) just before it runs."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

from bench import events
from bench.harness import clean_environ
from bench.wrk import POST_SCRIPT, WrkResult, run_wrk, write_pool

THREADS = 2
PATHS = {"slack": "/slack/events", "twilio": "/twilio/whatsapp", "run_async": "/run_async/echo/"}
POOLS: dict[str, Callable[[str, int], Iterator[bytes]]] = {
    "slack": events.slack_pool,
    "twilio": events.twilio_pool,
}


async def load(
    target: str,
    base_url: str,
    key: str,
    work: Path,
    seconds: float,
    connections: int = 50,
    *,
    pool_size: int = 0,
    delay_ms: float | None = None,
) -> tuple[WrkResult, int]:
    """One wrk run against ``target``; the pool is signed just before (its timestamps fresh)."""
    env = {**clean_environ(), "SWITCHBOARD_BENCH_KEY": key}
    if delay_ms is not None:
        env["BENCH_DELAY_MS"] = f"{delay_ms:g}"
    url = base_url + PATHS[target]
    if target == "run_async":
        return await run_wrk(url, connections, THREADS, seconds, script=POST_SCRIPT, env=env), 0
    pool = work / f"{target}-{secrets.token_hex(4)}.pool"
    size = pool_size or int(seconds * 8_000)
    count = await asyncio.to_thread(write_pool, pool, POOLS[target](url, size))
    try:
        env["BENCH_POOL"] = str(pool)
        return await run_wrk(url, connections, THREADS, seconds, env=env), count
    finally:
        pool.unlink()
