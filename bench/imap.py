"""IMAP mailbox intake: mails/s from IMAP ``APPEND`` into the inbox (issue 17).

Usage (from the repository root)::

    .venv/bin/python -m bench.imap [--mails 1000] [--backends sqlite,postgres] [--output FILE]

A throwaway Dovecot (tests/dovecot.py, Debian ``dovecot-imapd``) and ``switchboard serve --role
web`` reading one of its mailboxes (IDLE); this process APPENDs ``--mails`` distinct mails over
one connection as fast as Dovecot takes them and times from the first APPEND until the last
``email:imap:*`` row is in ``inbox_events``. Processing (runs) is not measured: no worker role.
Replaces the ``## IMAP intake`` section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench import report
from bench.harness import (
    Backend,
    BenchError,
    Store,
    clean_environ,
    create_key,
    postgres_store,
    sqlite_store,
    start_switchboard,
)
from tests.dovecot import Dovecot
from tests.integration.email_helpers import mail
from tests.pgserver import ThrowawayPostgres

HEADING = "## IMAP intake (bench/imap.py, issue 17)"


@dataclass(frozen=True)
class Result:
    backend: str
    mails: int
    append_seconds: float
    inbox_seconds: float
    stored: int

    def row(self) -> list[object]:
        return [
            self.backend,
            self.mails,
            f"{self.mails / self.append_seconds:,.0f}",
            f"{self.stored / self.inbox_seconds:,.0f}",
            f"{self.inbox_seconds:.2f}",
            self.stored,
            "ok" if self.stored == self.mails else "MISSING",
        ]


async def measure(backend: Backend, mails: int, work: Path, dovecot: Dovecot) -> Result:
    user = dovecot.add_user()
    with contextlib.ExitStack() as stack:
        pg = stack.enter_context(ThrowawayPostgres()) if backend == "postgres" else None
        store = postgres_store(pg, work, "imap") if pg else sqlite_store(work, "imap")
        env = {
            **clean_environ(),
            "SWITCHBOARD_SERVER__SQLITE_SYNCHRONOUS": "FULL",
            "SWITCHBOARD_SERVER__LOG_LEVEL": "WARNING",
            "SWITCHBOARD_RUNTIME__REGISTER_EXAMPLES": "false",
            "SWITCHBOARD_EMAIL__WORKFLOW": "echo",
            "SWITCHBOARD_EMAIL__MAILBOXES": json.dumps([user.mailbox()]),
        }
        await create_key(store, env)
        server = await start_switchboard(store, env, "web", work, f"imap-{backend}")
        try:
            await _connected(store)
            raws = [
                mail(f"Mail {n}", to=f"{user.name}@example.test").as_bytes() for n in range(mails)
            ]
            count = "select count(*) from inbox_events where trigger like 'email:imap:%'"
            async with dovecot.client(user) as imap:
                started = time.perf_counter()
                for raw in raws:
                    await imap.append(raw)
                appended = time.perf_counter() - started
                stored = await _stored(store, count, mails)
                done = time.perf_counter() - started
        finally:
            server.stop()
    return Result(backend, mails, appended, done, stored)


async def _stored(store: Store, sql: str, wanted: int) -> int:
    """``count(sql)`` once it reaches ``wanted`` (or after 120 s)."""
    deadline = time.monotonic() + 120
    while True:
        stored = await store.count(sql)
        if stored >= wanted or time.monotonic() > deadline:
            return stored
        await asyncio.sleep(0.02)  # a poll interval


async def _connected(store: Store) -> None:
    sql = "select count(*) from email_mailboxes where connected_at is not null"
    deadline = time.monotonic() + 30
    while await store.count(sql) == 0:
        if time.monotonic() > deadline:
            raise BenchError("the server did not connect to the mailbox within 30 s")
        await asyncio.sleep(0.05)  # a poll interval


def render(results: list[Result], command: str) -> str:
    header = [
        "backend", "mails", "APPEND/s (Dovecot)", "into inbox mails/s", "last stored after s",
        "stored", "check",
    ]  # fmt: skip
    lines = [
        HEADING,
        "",
        "Noisy: measured on a shared 2-core machine with other work running; rerun on a quiet one.",
        "",
        *(f"- {name}: {value}" for name, value in report.machine_facts()),
        f"- Command: `{command}`",
        f"- Code measured: {report.code_version()}",
        "",
        *report.table(header, [r.row() for r in results], right=1),
        "",
        "Mails/s counts from the first APPEND to the last inbox row: the server takes each new",
        "UID after the IDLE push, fetches it (`BODY.PEEK[]`), commits it and flags it `\\Seen`.",
        "",
        "Reading: into-inbox tracks Dovecot's own APPEND rate (Dovecot syncs each APPEND to its",
        "Maildir), so the source is the limit here; the server fetches, commits and flags in",
        "batches of up to 50.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mails", type=int, default=1000)
    parser.add_argument("--backends", default="sqlite")
    parser.add_argument("--output", type=Path, default=report.RESULTS)
    args = parser.parse_args(argv)
    backends: list[Backend] = [b for b in args.backends.split(",") if b in ("sqlite", "postgres")]
    dovecot = Dovecot()
    dovecot.start()
    try:
        with tempfile.TemporaryDirectory(prefix="sb-bench-imap-") as tmp:
            results = [
                asyncio.run(measure(backend, args.mails, Path(tmp) / backend, dovecot))
                for backend in backends
            ]
    finally:
        dovecot.close()
    text = render(results, "python -m bench.imap " + " ".join(argv or sys.argv[1:]))
    report.replace_section(text, args.output)
    print(text)
    return 0 if all(r.stored == r.mails for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
