"""What "every acknowledged event is in the store" counts, per target and server.

Switchboard's edges store an event in the ``inbox_events`` table once issue 12's inbox is merged
(columns ``id, trigger, dedupe_key, ..., received_at``); before that, the ack path commits a run
request, so the check counts ``runs``. The choice is made per store by looking for the table, so
the benchmark switches by itself when the inbox lands on main.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.harness import Store

TRIGGERS = {"slack": "slack", "twilio": "whatsapp"}  # target -> trigger name (fixed names)


@dataclass(frozen=True)
class Counter:
    name: str  # the table, as the report shows it
    sql: str


async def switchboard_counter(store: Store, target: str) -> Counter:
    trigger = TRIGGERS.get(target)
    if trigger is not None and await store.has_table("inbox_events"):
        return Counter(
            f"inbox_events ({trigger})",
            f"select count(*) from inbox_events where trigger = '{trigger}'",
        )
    return Counter("runs", "select count(*) from runs")


def reference_counter(target: str) -> Counter:
    source = TRIGGERS.get(target, "run")
    return Counter(f"events ({source})", f"select count(*) from events where source = '{source}'")
