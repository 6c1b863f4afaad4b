"""The chaos run's figures as a Markdown section for bench/RESULTS.md.

Events by source (sent, acknowledged), faults by kind, lost and doubled, the longest recovery
(per fault: from its end until every event acknowledged before that end had its reply), the
schedule leader's fail-overs (how long no node led), replies per second during the faults and
after them, and the drain time.
"""

from __future__ import annotations

import argparse
from collections import Counter
from dataclasses import dataclass, field

from bench import report
from bench.chaos_cluster import Cluster
from bench.chaos_faults import Fault
from bench.chaos_load import Ledger
from bench.chaos_verdict import Facts, Verdict


@dataclass
class Timeline:
    start: float
    leaders: list[tuple[float, str | None]] = field(default_factory=list)

    def note_leader(self, at: float, leader: str | None) -> None:
        if not self.leaders or self.leaders[-1][1] != leader:
            self.leaders.append((at, leader))

    def failovers(self) -> list[float]:
        """Seconds without a leader, per gap after a first leader was seen."""
        gaps = []
        seen = False
        for (at, leader), (after, _) in zip(self.leaders, self.leaders[1:], strict=False):
            seen = seen or leader is not None
            if seen and leader is None:
                gaps.append(after - at)
        return gaps


def _recoveries(faults: list[Fault], ledger: Ledger, facts: Facts) -> list[float]:
    replies = facts.replies_by_token()
    answered = {
        entry.token: min(reply.at for reply in replies[entry.token])
        for entry in ledger.acked()
        if replies.get(entry.token)
    }
    spans = []
    for fault in faults:
        if fault.ended is None:
            continue
        before = [
            answered[entry.token]
            for entry in ledger.acked()
            if entry.token in answered and (entry.acked_at or 0) <= fault.ended
        ]
        spans.append(max([fault.ended, *before]) - fault.ended)
    return spans


def _rate(facts: Facts, start: float, end: float) -> float:
    if end <= start:
        return 0.0
    count = sum(start <= reply.at < end for reply in facts.replies)
    count += sum(start <= at < end for at in facts.hook_times.values())
    return count / (end - start)


def render(
    args: argparse.Namespace,
    cluster: Cluster,
    faults: list[Fault],
    ledger: Ledger,
    facts: Facts,
    verdict: Verdict,
    timeline: Timeline,
    *,
    drained: float | None,
    calm: float,
    load_end: float,
) -> str:
    title = (
        f"## Chaos: {args.backend}, {cluster.shape} shape, {args.duration:g} s, seed {args.seed}"
    )
    command = f"python -m bench.chaos --duration {args.duration:g} --seed {args.seed}"
    command += f" --backend {args.backend}"
    if args.backend == "postgres":
        command += f" --shape {args.shape}"
    lines = [title, "", f"`{command}`", ""]
    rows: list[list[object]] = [
        [source, verdict.counts[f"{source} sent"], verdict.counts[f"{source} acked"]]
        for source in ("slack", "whatsapp", "email", "api")
    ]
    rows.append(["schedule ticks", verdict.counts["ticks"], verdict.counts["ticks"]])
    lines += report.table(["source", "events", "acknowledged"], rows, right=1)
    kinds = Counter(fault.kind for fault in faults)
    lines += ["", "Faults: " + ", ".join(f"{kind} {n}" for kind, n in sorted(kinds.items()))]
    for fault in faults:
        lines.append(f"- +{fault.offset:.1f} s {fault.kind} {fault.target} "
                     f"{fault.length:.1f} s {fault.note}".rstrip())  # fmt: skip
    recoveries = _recoveries(faults, ledger, facts)
    failovers = timeline.failovers()
    first_fault = min((f.started for f in faults if f.started), default=calm)
    faults_end = max((f.ended for f in faults if f.ended), default=calm)
    lines += [
        "",
        *report.table(
            ["figure", "value"],
            [
                ["lost", verdict.counts["lost"] + verdict.counts["ticks lost"]],
                ["doubled", verdict.counts["doubled"]],
                ["redelivered (same Message-ID / Idempotency-Key)", verdict.counts["redelivered"]],
                ["out of order", verdict.counts["out of order"]],
                ["violations", len(verdict.violations)],
                ["longest recovery", f"{max(recoveries, default=0):.1f} s"],
                ["leader fail-overs", ", ".join(f"{gap:.1f} s" for gap in failovers) or "none"],
                ["replies/s during faults", f"{_rate(facts, first_fault, faults_end):.1f}"],
                ["replies/s after faults", f"{_rate(facts, faults_end, load_end):.1f}"],
                ["drained after faults", "not drained" if drained is None else f"{drained:.1f} s"],
            ],
        ),
    ]
    return "\n".join(lines) + "\n"
