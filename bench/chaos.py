"""Issue 15's proof under faults: a cluster under steady load from every source, faults at seeded
random moments, and a verdict from the fakes' records and the database.

Usage (root; from the repository root)::

    .venv/bin/python -m bench.chaos --duration 90 --seed 1 --backend postgres [--shape split|all]
    .venv/bin/python -m bench.chaos --duration 60 --seed 1 --backend sqlite   # the single node

The run re-executes itself in a network namespace of its own (bench/chaos_net.py), starts the
fakes and PostgreSQL on a bridge there and every node in its own namespace, loads it for
``--duration`` s (faults from ``START`` s until ``TAIL`` s before the end), then waits for the
backlog to drain (``--drain-limit``) and judges. Exit status 0: no violation; 1: violations (each
printed with its events); 2: it could not run. ``--output FILE`` replaces this benchmark's section
of that Markdown file (bench/RESULTS.md for the published figures).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from bench import chaos_net
from bench.chaos_cluster import Cluster, Shape, leader_of, make_cluster
from bench.chaos_faults import Fault, inject, log, plan
from bench.chaos_load import Ledger, Load
from bench.chaos_report import Timeline, render
from bench.chaos_sinks import Sinks, running_sinks
from bench.chaos_verdict import Verdict, gather, judge, outstanding
from tests.pgserver import ThrowawayPostgres

SCHEDULES = ["tick-a", "tick-b"]
QUIET_AFTER_DRAIN = 3.0
"""Seconds the harness keeps watching after the backlog drained, for late doubles."""


async def create_schedules(cluster: Cluster, sinks: Sinks) -> datetime:
    node = cluster.web_nodes[0]
    async with httpx.AsyncClient(
        base_url=node.url, headers={"Authorization": f"Bearer {cluster.key}"}, timeout=30
    ) as http:
        for schedule in SCHEDULES:
            created = await http.post(
                "/schedules",
                json={
                    "id": schedule,
                    "service_id": "echo",
                    "cron_expression": "* * * * * *",
                    "input_data": {"schedule": schedule},
                    "deliver_to": f"webhook:{sinks.webhook.url}/hook/{schedule}",
                    # Every tick of the window must fire once, however long the scheduler was
                    # down: under "skip" a lone scheduler down past takeover_grace drops some.
                    "misfire_policy": "run_all",
                    "misfire_grace": 3600,
                },
            )
            if created.status_code != 201:
                raise chaos_net.NetworkError(f"POST /schedules: {created.text}")
    return datetime.now(UTC)


async def watch(cluster: Cluster, sinks: Sinks, timeline: Timeline, stop: asyncio.Event) -> None:
    """Stamp what the fakes received and note who leads the schedules, until ``stop``."""
    while not stop.is_set():
        sinks.stamp()
        leader = await leader_of(cluster.nodes)
        timeline.note_leader(time.monotonic(), leader)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.25):  # a poll interval
                await stop.wait()


async def run(args: argparse.Namespace, work: Path) -> int:
    chaos_net.isolate_hub()
    shape: Shape = "single" if args.backend == "sqlite" else args.shape
    count = 1 if shape == "single" else 4
    namespaces = [chaos_net.NodeNamespace(index) for index in range(1, count + 1)]
    with contextlib.ExitStack() as stack:
        for namespace in namespaces:
            namespace.create()
            stack.callback(namespace.close)
        pg = None
        if args.backend == "postgres":
            pg = stack.enter_context(
                ThrowawayPostgres(host=chaos_net.HUB_ADDRESS, settings={"synchronous_commit": "on"})
            )
        async with running_sinks() as sinks:
            cluster = make_cluster(shape, work, sinks, namespaces, pg)
            stack.callback(cluster.stop)
            log(f"starting {shape} cluster ({args.backend}) in {work}")
            await cluster.start()
            return await _exercise(args, cluster, sinks)


async def _exercise(args: argparse.Namespace, cluster: Cluster, sinks: Sinks) -> int:
    rng = random.Random(args.seed)
    faults = plan(rng, args.duration, cluster)
    for fault in faults:
        log(f"planned: {fault.describe()}")
    created = await create_schedules(cluster, sinks)
    ledger = Ledger()
    start = time.monotonic()
    load_start_wall = datetime.now(UTC)
    load = Load(ledger, cluster.nodes, cluster.key, rng, start + args.duration, args.rate)
    timeline = Timeline(start)
    stop = asyncio.Event()
    watcher = asyncio.create_task(watch(cluster, sinks, timeline, stop))
    await asyncio.gather(load.run(), inject(faults, cluster, sinks, start))
    load_end = time.monotonic()
    load_end_wall = datetime.now(UTC)
    calm = max([load_end, *(f.ended or load_end for f in faults)])
    first = max(created, load_start_wall).replace(microsecond=0) + timedelta(seconds=2)
    last = load_end_wall.replace(microsecond=0) - timedelta(seconds=2)
    window = (first, last)
    log(f"load over: {len(ledger.sent)} events sent; draining (limit {args.drain_limit:g} s)")
    drained_at: float | None = None
    while time.monotonic() < calm + args.drain_limit:
        facts = await gather(cluster.store, sinks)
        if outstanding(ledger, facts, window, SCHEDULES) == 0:
            drained_at = time.monotonic()
            break
        await asyncio.sleep(0.5)  # a poll interval
    await asyncio.sleep(QUIET_AFTER_DRAIN)  # watch for late doubles after the drain
    stop.set()
    await watcher
    facts = await gather(cluster.store, sinks, states=True)
    verdict = judge(ledger, facts, window, SCHEDULES)
    if drained_at is None:
        left = outstanding(ledger, facts, window, SCHEDULES)
        verdict.violations.append(
            f"backlog not drained {args.drain_limit:g} s after the faults stopped: {left} left"
        )
    text = render(args, cluster, faults, ledger, facts, verdict, timeline,
                  drained=None if drained_at is None else drained_at - calm,
                  calm=calm, load_end=load_end)  # fmt: skip
    print(text)
    if args.output is not None:
        _replace_section(args.output, text)
    _print_violations(verdict)
    return 0 if verdict.ok else 1


def _print_violations(verdict: Verdict) -> None:
    if verdict.ok:
        log("verdict: no violation")
        return
    log(f"verdict: {len(verdict.violations)} violations")
    for line in verdict.violations[:200]:
        print(f"VIOLATION {line}", file=sys.stderr)


def _replace_section(path: Path, text: str) -> None:
    from bench import report

    report.replace_section(text, path)


def faults_by_kind(faults: list[Fault]) -> Counter[str]:
    return Counter(fault.kind for fault in faults)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=90.0, help="seconds of load")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--backend", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--shape", choices=("split", "all"), default="split")
    parser.add_argument("--rate", type=float, default=1.0, help="load multiplier")
    parser.add_argument("--drain-limit", type=float, default=60.0)
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs)")
    parser.add_argument(chaos_net.INSIDE_FLAG, action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        if not args.inside_netns:
            return chaos_net.enter_own_namespace(argv)
        work = Path(tempfile.mkdtemp(prefix="sb-chaos-"))
        try:
            return asyncio.run(run(args, work))
        finally:
            if args.keep:
                log(f"kept {work}")
            else:
                shutil.rmtree(work, ignore_errors=True)
    except chaos_net.NetworkError as exc:
        log(f"could not run: {exc}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
