"""Slack mention -> reply latency for ``echo`` (was the second half of bench/slack.py).

Usage (from the repository root)::

    .venv/bin/python -m bench.slack_reply [--mentions 30] [--backend sqlite|postgres]

``switchboard serve --role web,worker`` with ``[slack]`` pointed at the fake Web API of
tests/fakes/slack_api.py (in this process); one signed mention at a time, timed from the POST to
the moment the fake receives the ``chat.postMessage`` in that thread. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench import events, report
from bench.harness import Backend, create_key, postgres_store, sqlite_store, start_switchboard
from bench.intake import switchboard_env
from tests.fakes.slack_api import SlackApi, signed_headers
from tests.pgserver import ThrowawayPostgres

WARMUP = 3


async def measure(backend: Backend, mentions: int, work: Path) -> list[float]:
    samples: list[float] = []
    with contextlib.ExitStack() as stack:
        pg = stack.enter_context(ThrowawayPostgres()) if backend == "postgres" else None
        store = postgres_store(pg, work, "reply") if pg else sqlite_store(work, "reply")
        async with SlackApi.running() as slack_api:
            env = {**switchboard_env(slack_api.api_url), "SWITCHBOARD_SLACK__CHANNEL_INTERVAL": "0"}
            await create_key(store, env)
            server = await start_switchboard(store, env, "web,worker", work, "slack-reply")
            try:
                async with httpx.AsyncClient(timeout=10) as http:
                    for index in range(WARMUP + mentions):
                        body = events.slack_mention(900_000_000 + index).decode()
                        thread = json.loads(body)["event"]["ts"]
                        headers = signed_headers(events.SLACK_SECRET, body)
                        started = time.perf_counter()
                        response = await http.post(
                            f"{server.url}/slack/events", content=body, headers=headers
                        )
                        response.raise_for_status()

                        def replied(ts: str = thread) -> bool:
                            return any(call.args.get("thread_ts") == ts for call in slack_api.posts)

                        await slack_api.wait_for(replied, timeout=10)
                        if index >= WARMUP:
                            samples.append((time.perf_counter() - started) * 1000)
            finally:
                server.stop()
    return samples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mentions", type=int, default=30)
    parser.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="sb-bench-reply-") as tmp:
        samples = asyncio.run(measure(args.backend, args.mentions, Path(tmp)))
    header = ["backend", "mentions", "reply p50 ms", "reply p99 ms", "max ms"]
    row = [
        args.backend, len(samples), report.fmt_ms(report.percentile(samples, 50)),
        report.fmt_ms(report.percentile(samples, 99)), report.fmt_ms(max(samples)),
    ]  # fmt: skip
    print("\n".join(report.table(header, [row], right=1)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
