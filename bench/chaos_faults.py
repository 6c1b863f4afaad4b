"""Faults at seeded random moments, each logged when it starts and ends.

Kinds: ``kill`` (SIGKILL of a node, restarted after a random delay), ``postgres`` (immediate
shutdown, restart after a few seconds), ``cut`` (a node's veth down for a few seconds: no
database, no fakes, no clients), ``provider`` (a fake answering 500, 429 with ``Retry-After``,
or hanging past the sender's timeout). The plan is drawn from ``--seed`` before the run, so a
seed names the same faults at the same offsets; which node a ``kill`` hits moves to a live one
when its planned target is down at that moment.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from dataclasses import dataclass
from typing import Literal, cast

from bench.chaos_cluster import Cluster, Node
from bench.chaos_sinks import Misbehaviour, Provider, Sinks

Kind = Literal["kill", "postgres", "cut", "provider"]
PROVIDER_FAULTS: list[tuple[Provider, Misbehaviour, float]] = [
    ("slack", "500", 0),
    ("slack", "429", 0),
    ("slack", "hang", 5),  # a slow Slack (slack_sdk's client waits 30 s)
    ("twilio", "500", 0),
    ("twilio", "429", 0),
    ("twilio", "hang", 6),  # past [whatsapp] send_timeout = 3 s
    ("smtp", "500", 5),  # 451 for a while
    ("webhook", "500", 4),
    ("webhook", "429", 4),
    ("webhook", "hang", 12),  # past the webhook sender's 10 s
]
START = 8.0
"""Seconds of fault-free load first, and (``TAIL``) at the end, before the drain is measured."""
TAIL = 12.0
RESTART_ATTEMPTS = 5
FREE_WAIT = 120.0
"""Seconds a fault waits for a live node no other fault has before it is skipped."""


@dataclass
class Fault:
    kind: Kind
    offset: float
    target: str
    length: float
    started: float | None = None
    ended: float | None = None
    note: str = ""

    def describe(self) -> str:
        return f"{self.kind} {self.target} for {self.length:.1f} s at +{self.offset:.1f} s"


def plan(rng: random.Random, duration: float, cluster: Cluster) -> list[Fault]:
    """At least 8 faults of mixed kinds (one per 10 s), spread over the run's middle."""
    count = max(8, int(duration // 10))
    kinds: list[Kind] = (
        ["kill", "kill", "postgres", "cut", "provider", "provider", "provider", "provider"]
        if cluster.pg is not None
        else ["kill", "kill", "kill", "provider", "provider", "provider", "provider", "kill"]
    )
    choices: list[Kind] = list(kinds[:4]) + ["provider"] * 2
    kinds += [rng.choice(choices) for _ in range(count - len(kinds))]
    rng.shuffle(kinds)
    # The first three provider faults are one 500, one 429 and one hang; then any.
    modes: list[Misbehaviour] = ["500", "429", "hang"]
    span = max(duration - START - TAIL, 1.0)
    offsets = sorted(START + span * (i + rng.uniform(0.1, 0.9)) / count for i in range(count))
    faults = []
    for kind, offset in zip(kinds, offsets, strict=True):
        if kind == "kill":
            node = rng.choice(cluster.nodes)
            faults.append(Fault(kind, offset, node.name, rng.uniform(1.0, 4.0)))
        elif kind == "cut":
            node = rng.choice(cluster.nodes)
            faults.append(Fault(kind, offset, node.name, rng.uniform(3.0, 6.0)))
        elif kind == "postgres":
            faults.append(Fault(kind, offset, "postgres", rng.uniform(2.0, 5.0)))
        else:
            wanted = modes.pop(0) if modes else None
            options = [f for f in PROVIDER_FAULTS if wanted is None or f[1] == wanted]
            provider, mode, length = rng.choice(options)
            faults.append(Fault(kind, offset, f"{provider}:{mode}", length))
    return faults


def log(message: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


async def inject(faults: list[Fault], cluster: Cluster, sinks: Sinks, start: float) -> None:
    """Run every fault at its offset from ``start``; returns once all of them have ended."""
    tasks = []
    for fault in faults:
        await asyncio.sleep(max(0.0, start + fault.offset - time.monotonic()))  # its moment
        tasks.append(asyncio.create_task(_one(fault, cluster, sinks)))
    await asyncio.gather(*tasks)


async def _one(fault: Fault, cluster: Cluster, sinks: Sinks) -> None:
    fault.started = time.monotonic()
    log(f"fault: {fault.describe()}")
    try:
        if fault.kind == "kill":
            await _kill(fault, cluster)
        elif fault.kind == "cut":
            await _cut(fault, cluster)
        elif fault.kind == "postgres":
            assert cluster.pg is not None
            await asyncio.to_thread(cluster.pg.crash)
            await asyncio.sleep(fault.length)  # the fault's length
            await asyncio.to_thread(cluster.pg.start_again)
        else:
            provider, _, mode = fault.target.partition(":")
            await sinks.misbehave(cast(Provider, provider), cast(Misbehaviour, mode), fault.length)
    finally:
        fault.ended = time.monotonic()
        log(f"fault over: {fault.kind} {fault.target} {fault.note}".rstrip())


async def _free_node(fault: Fault, cluster: Cluster) -> Node | None:
    """The planned node, or the first live one no other fault has, once there is one.

    Skipping a fault whose moment finds every node down or faulted made the run's fault count
    depend on how fast nodes booted (on a loaded machine, several faults were skipped and the
    run proved less than it claimed); the fault waits up to ``FREE_WAIT`` s for a node instead,
    and says so. None only after that.
    """
    planned = next(n for n in cluster.nodes if n.name == fault.target)
    deadline = time.monotonic() + FREE_WAIT
    while True:
        free = [n for n in cluster.nodes if n.alive and not n.faulted]
        node = planned if planned in free else (free[0] if free else None)
        if node is not None:
            break
        if time.monotonic() >= deadline:
            fault.note = f"(every node was down or faulted for {FREE_WAIT:g} s: skipped)"
            return None
        await asyncio.sleep(0.5)  # a poll interval: nodes report nothing when they come back
    waited = time.monotonic() - (fault.started or 0)
    if waited >= 1:
        fault.note = f"(waited {waited:.1f} s for a free node) "
    fault.target = node.name
    node.faulted = True
    return node


async def _cut(fault: Fault, cluster: Cluster) -> None:
    node = await _free_node(fault, cluster)
    if node is None:
        return
    try:
        node.namespace.cut()
        await asyncio.sleep(fault.length)  # the fault's length
        node.namespace.mend()
    finally:
        node.faulted = False


async def _kill(fault: Fault, cluster: Cluster) -> None:
    node = await _free_node(fault, cluster)
    if node is None:
        return
    try:
        node.kill()
        await asyncio.sleep(fault.length)  # the restart delay
        for attempt in range(1, RESTART_ATTEMPTS + 1):
            try:
                await node.start_ready()
                break
            except AssertionError as exc:  # e.g. it booted while PostgreSQL was down, gave up
                log(f"{node.name} did not come back (attempt {attempt}): {str(exc)[:200]}")
                node.stop()
                await asyncio.sleep(1.0)  # before the next start
        fault.note += f"(back after {time.monotonic() - (fault.started or 0):.1f} s)"
    finally:
        node.faulted = False
