"""The verdict: from what the fakes received and what the database holds, never our logs.

Every event a source saw acknowledged (2xx, SMTP 250) must have exactly one run (its token in
exactly one run's request) and exactly one reply (its token in exactly one message the fake
provider accepted; a failed run's one-line reply counts through its run id); no event, acked or
not, two; per conversation the replies in message order; every ``/run_async`` acknowledged with
one request id, that run completed; every schedule tick in the window exactly one run and one
webhook delivery. A repeat carrying the provider's own dedupe key (the mail's Message-ID, the
webhook's ``Idempotency-Key``) is counted as redelivered: its recipient sees one message.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from bench.chaos_load import Ledger, Sent
from bench.chaos_sinks import Sinks
from bench.harness import Store
from core.clock import parse_iso

TOKEN = re.compile(r"chaos-[swea]-\d{6}")
FAILED_RUN = re.compile(r"\(run (\S+) ")
"""``delivery.failure_line``'s default names the run: ``… (run {run_id} {status}).``"""


@dataclass(frozen=True)
class Reply:
    source: str
    token: str | None
    run_id: str | None
    index: int
    at: float
    identity: str = ""
    """The provider's own dedupe key when it has one (email: the Message-ID): a repeat with
    the same identity is one message to its recipient, counted as redelivered, not doubled."""


@dataclass
class Facts:
    """Everything the verdict reads, gathered once (or again while the backlog drains)."""

    runs: list[tuple[str, str, str, str, str]]  # id, source, status, idempotency key, body
    replies: list[Reply]
    hooks: dict[str, list[str]]  # run id -> Idempotency-Keys of the POSTs carrying it
    hook_times: dict[str, float]
    inbox: list[tuple[str, str, str, str]] = field(default_factory=list)
    """id, trigger, "status, attempts, error", body: read for the final verdict only."""
    deliveries: dict[str, str] = field(default_factory=dict)
    """run id -> "status, attempts, last error": read for the final verdict only."""

    def inbox_state(self, token: str) -> str:
        """Where the inbox has the event carrying ``token``: what a lost run is explained by."""
        found = [f"{i} {trig} {state}" for i, trig, state, body in self.inbox if token in body]
        return "; inbox: " + (", ".join(found) if found else "no event holds it")

    def run_state(self, runs: list[str], status: dict[str, str]) -> str:
        """Each run's status and its delivery's: what a lost or doubled reply is explained by."""
        parts = [
            f"run {run} {status.get(run, '?')}, delivery "
            + self.deliveries.get(run, "none" if self.deliveries else "not read")
            for run in runs
        ]
        return "; " + "; ".join(parts) if parts else ""

    def tokens_in_runs(self) -> dict[str, list[str]]:
        found: dict[str, list[str]] = defaultdict(list)
        for run_id, _, _, _, body in self.runs:
            for token in set(TOKEN.findall(body or "")):
                found[token].append(run_id)
        return found

    def replies_by_token(self) -> dict[str, list[Reply]]:
        token_of = {run_id: tokens[0] for tokens, run_id in self._run_tokens()}
        found: dict[str, list[Reply]] = defaultdict(list)
        for reply in self.replies:
            token = reply.token or token_of.get(reply.run_id or "")
            if token is not None:
                found[token].append(reply)
        return found

    def _run_tokens(self) -> list[tuple[list[str], str]]:
        return [
            (sorted(set(TOKEN.findall(body or ""))), run_id)
            for run_id, _, _, _, body in self.runs
            if TOKEN.search(body or "")
        ]

    def ticks(self) -> dict[tuple[str, datetime], list[str]]:
        """(schedule id, fire time) -> run ids."""
        found: dict[tuple[str, datetime], list[str]] = defaultdict(list)
        for run_id, source, _, key, _ in self.runs:
            if source == "schedule" and key:
                _, scheduled, tick = key.split(":", 2)  # schedule:<owner>/<id>:<time>
                found[(scheduled.partition("/")[2], parse_iso(tick))].append(run_id)
        return found


async def gather(store: Store, sinks: Sinks, *, states: bool = False) -> Facts:
    """What the fakes and the database hold; with ``states``, also every inbox event and
    delivery, so that each violation can say where its event stopped (the final verdict)."""
    sinks.stamp()
    rows = await store.rows(
        "select id, source, status, coalesce(idempotency_key, ''), coalesce(request_body, '')"
        " from runs"
    )
    runs = [tuple(str(value) for value in row) for row in rows]
    replies: list[Reply] = []
    for index, call in enumerate(sinks.slack.calls):
        if call.method == "chat.postMessage" and call.args.get("_ok"):
            replies.append(_reply("slack", str(call.args.get("text", "")), index, sinks))
    for index, message in enumerate(sinks.twilio.messages):
        replies.append(_reply("twilio", message.body or "", index, sinks))
    for index, mail in enumerate(sinks.smtp.messages):
        part = mail.get_body(("plain",))
        text = part.get_content() if part is not None else ""
        replies.append(_reply("smtp", str(text), index, sinks, str(mail["Message-ID"])))
    hooks: dict[str, list[str]] = defaultdict(list)
    hook_times: dict[str, float] = {}
    for hook in sinks.webhook.hooks:
        run_id = str(json.loads(hook.body).get("request_id"))
        hooks[run_id].append(hook.idempotency_key)
        hook_times.setdefault(run_id, hook.at)
    facts = Facts(runs, replies, dict(hooks), hook_times)  # type: ignore[arg-type]
    if states:
        await _read_states(store, facts)
    return facts


async def _read_states(store: Store, facts: Facts) -> None:
    for event_id, trigger, status, attempts, error, body in await store.rows(
        "select id, \"trigger\", status, attempts, coalesce(error, ''), body from inbox_events"
    ):
        raw = bytes(body) if isinstance(body, bytes | memoryview) else b""  # NULL once pruned
        text = raw.decode("utf-8", "replace")
        facts.inbox.append((str(event_id), str(trigger), _state(status, attempts, error), text))
    for run_id, status, attempts, error in await store.rows(
        "select run_id, status, attempts, coalesce(last_error, '') from deliveries"
    ):
        facts.deliveries[str(run_id)] = _state(status, attempts, error)


def _state(status: object, attempts: object, error: object) -> str:
    """A row's state as a violation names it: ``failed (attempts 3, <error>)``."""
    return f"{status} (attempts {attempts}{', ' + str(error)[:120] if error else ''})"


def _reply(source: str, text: str, index: int, sinks: Sinks, identity: str = "") -> Reply:
    token = TOKEN.search(text)
    failed = FAILED_RUN.search(text)
    return Reply(
        source,
        token.group(0) if token else None,
        failed.group(1) if failed else None,
        index,
        sinks.seen_at(source, index),
        identity or f"{source}#{index}",
    )


@dataclass
class Verdict:
    violations: list[str] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)

    @property
    def ok(self) -> bool:
        return not self.violations


def judge(
    ledger: Ledger, facts: Facts, window: tuple[datetime, datetime], schedules: list[str]
) -> Verdict:
    verdict = Verdict()
    runs_of = facts.tokens_in_runs()
    replies_of = facts.replies_by_token()
    status = {run[0]: run[2] for run in facts.runs}
    for entry in ledger.sent:
        runs = runs_of.get(entry.token, [])
        replies = replies_of.get(entry.token, [])
        acked = entry.acked_at is not None
        verdict.counts[f"{entry.source} sent"] += 1
        verdict.counts[f"{entry.source} acked"] += acked
        if len(runs) > 1:
            verdict.violations.append(
                f"{entry.token} ({entry.source}): {len(runs)} runs {runs}"
                + facts.run_state(runs, status)
            )
        distinct = {reply.identity for reply in replies}
        if len(distinct) > 1:
            verdict.violations.append(
                f"{entry.token} ({entry.source}): {len(distinct)} replies "
                f"(indexes {[r.index for r in replies]})" + facts.run_state(runs, status)
            )
            verdict.counts["doubled"] += 1
        verdict.counts["redelivered"] += len(replies) - len(distinct)
        if not acked:
            continue
        if not runs:
            verdict.violations.append(
                f"{entry.token} ({entry.source}) acked, no run" + facts.inbox_state(entry.token)
            )
            verdict.counts["lost"] += 1
        elif any(status[run] == "failed" for run in runs):
            verdict.violations.append(
                f"{entry.token} ({entry.source}): run {runs} failed" + facts.run_state(runs, status)
            )
        if entry.source == "api":
            _judge_api(entry, runs, status, verdict)
        elif not replies:
            verdict.violations.append(
                f"{entry.token} ({entry.source}) acked, no reply" + facts.run_state(runs, status)
            )
            verdict.counts["lost"] += 1
    _judge_order(ledger, replies_of, verdict)
    _judge_ticks(facts, window, schedules, verdict)
    return verdict


def _judge_api(entry: Sent, runs: list[str], status: dict[str, str], verdict: Verdict) -> None:
    if len({answer for answer in entry.answers if answer.startswith("req")}) > 1:
        verdict.violations.append(f"{entry.token}: acked with several ids {entry.answers}")
    if runs and entry.request_id not in runs:
        verdict.violations.append(f"{entry.token}: acked as {entry.request_id}, ran as {runs}")
    if runs and any(status[run] != "completed" for run in runs):
        verdict.violations.append(
            f"{entry.token}: run {runs} is {[status[r] for r in runs]}, not completed"
        )


def _judge_order(ledger: Ledger, replies_of: dict[str, list[Reply]], verdict: Verdict) -> None:
    chats: dict[tuple[str, str], list[tuple[int, int, str]]] = defaultdict(list)
    for entry in ledger.acked():
        replies = replies_of.get(entry.token, [])
        if entry.source != "api" and replies:
            chats[(entry.source, entry.conversation)].append(
                (entry.seq, replies[0].index, entry.token)
            )
    for (source, conversation), items in chats.items():
        by_reply = [token for _, _, token in sorted(items, key=lambda item: item[1])]
        by_message = [token for _, _, token in sorted(items)]
        if by_reply != by_message:
            verdict.violations.append(
                f"{source} {conversation}: replies out of order: {by_reply} "
                f"(messages: {by_message})"
            )
            verdict.counts["out of order"] += 1


def _judge_ticks(
    facts: Facts, window: tuple[datetime, datetime], schedules: list[str], verdict: Verdict
) -> None:
    ticks = facts.ticks()
    first, last = window
    for schedule in schedules:
        moment = first
        while moment <= last:
            runs = ticks.get((schedule, moment), [])
            verdict.counts["ticks"] += 1
            if not runs:
                verdict.violations.append(f"tick {schedule} {moment.isoformat()}: no run")
                verdict.counts["ticks lost"] += 1
            for run in runs:
                posts = facts.hooks.get(run, [])
                if not posts:
                    verdict.violations.append(
                        f"tick {schedule} {moment.isoformat()}: run {run} never delivered"
                    )
                    verdict.counts["ticks lost"] += 1
                elif len(set(posts)) > 1:
                    verdict.violations.append(
                        f"tick {schedule} {moment.isoformat()}: run {run} delivered "
                        f"{len(posts)} times {sorted(set(posts))}"
                    )
                    verdict.counts["doubled"] += 1
                else:
                    verdict.counts["redelivered"] += len(posts) - 1
            moment += timedelta(seconds=1)


def outstanding(ledger: Ledger, facts: Facts, window: tuple[datetime, datetime],
                schedules: list[str]) -> int:  # fmt: skip
    """Acked events without their reply (or API run not finished) and window ticks undelivered:
    the backlog still to drain."""
    runs_of = facts.tokens_in_runs()
    replies_of = facts.replies_by_token()
    status = {run[0]: run[2] for run in facts.runs}
    missing = 0
    for entry in ledger.acked():
        if entry.source == "api":
            runs = runs_of.get(entry.token, [])
            missing += not runs or any(status[r] not in {"completed", "failed"} for r in runs)
        else:
            missing += not replies_of.get(entry.token)
    ticks = facts.ticks()
    for schedule in schedules:
        moment = window[0]
        while moment <= window[1]:
            runs = ticks.get((schedule, moment), [])
            missing += not runs or not all(facts.hooks.get(run) for run in runs)
            moment += timedelta(seconds=1)
    return missing
