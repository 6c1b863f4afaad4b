"""What "every acknowledged event is in the store" counts, per target and server.

Switchboard's edges store an event in the ``inbox_events`` table once a channel is converted to
issue 12's inbox (columns ``id, trigger, dedupe_key, ..., received_at``); before that, its ack
path commits a run request. The check counts the trigger's inbox rows when the row gained any,
else ``runs`` (the table exists on main before every channel writes it), so the benchmark
switches by itself as each channel lands.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.harness import Store

TRIGGERS = {"slack": "slack", "twilio": "whatsapp"}  # target -> trigger name (fixed names)


@dataclass(frozen=True)
class Counter:
    name: str  # the table, as the report shows it
    sql: str
    fallback: Counter | None = None  # counted instead when ``sql``'s count did not grow


async def switchboard_counter(store: Store, target: str) -> Counter:
    trigger = TRIGGERS.get(target)
    if trigger is not None and await store.has_table("inbox_events"):
        return Counter(
            f"inbox_events ({trigger})",
            f"select count(*) from inbox_events where trigger = '{trigger}'",
            RUNS,
        )
    return RUNS


RUNS = Counter("runs", "select count(*) from runs")


def reference_counter(target: str) -> Counter:
    source = TRIGGERS.get(target, "run")
    return Counter(f"events ({source})", f"select count(*) from events where source = '{source}'")
