"""Ticks that passed while no scheduler ran, and what the misfire policy makes of them.

Computed when a leader starts (and when it picks up a new or changed schedule) from the
schedule's ``last_fire_at`` (or its last definition change, if later). Ticks less than
``on_time`` seconds late are not misfires: they are the hand-over and change-pickup latency, and
fire normally under every policy. Older ones within ``misfire_grace``: ``skip`` counts them as
missed, ``run_once`` runs the latest of them (one catch-up run), ``run_all`` runs each with its own
fire time. Ticks older than the grace are missed under every policy.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import islice

from scheduler.cron import Cron
from scheduler.models import MisfirePolicy

COUNT_LIMIT = 10_000
"""Missed ticks counted per catch-up, at most (a per-second schedule down for a week)."""
RUN_LIMIT = 1_000
"""Catch-up runs per schedule, at most (the latest ones); older ticks count as missed."""


@dataclass(frozen=True, slots=True)
class CatchUp:
    run: list[datetime] = field(default_factory=list)
    """Fire times to run now, oldest first."""
    missed: int = 0
    last_tick: datetime | None = None
    """The latest tick up to now (run or missed): the schedule's new ``last_fire_at``."""


def plan_catch_up(
    cron: Cron,
    policy: MisfirePolicy,
    grace: float,
    since: datetime,
    now: datetime,
    *,
    on_time: float = 2.0,
) -> CatchUp:
    """What to do with the ticks in ``(since, now]``."""
    on_time_from = now - timedelta(seconds=on_time)
    runnable_from = min(on_time_from, now - timedelta(seconds=grace))
    missed = 0
    start = since
    if since < runnable_from:
        # Ticks too old to run: count them (up to a limit) and continue after them.
        for tick in islice(cron.fire_times(since), COUNT_LIMIT):
            if tick > runnable_from:
                break
            missed += 1
            start = tick
        else:
            start = max(start, runnable_from)
    late: deque[datetime] = deque(maxlen=RUN_LIMIT)
    punctual: list[datetime] = []
    overflow = 0
    for tick in cron.fire_times(start):
        if tick > now:
            break
        if tick > on_time_from:
            punctual.append(tick)
        else:
            if len(late) == late.maxlen:
                overflow += 1
            late.append(tick)
    missed += overflow
    last_tick = max([*late, *punctual], default=None)
    if last_tick is None and missed:
        last_tick = start
    if policy == MisfirePolicy.RUN_ALL:
        return CatchUp(run=[*late, *punctual], missed=missed, last_tick=last_tick)
    if policy == MisfirePolicy.RUN_ONCE and late:
        return CatchUp(
            run=[late[-1], *punctual], missed=missed + len(late) - 1, last_tick=last_tick
        )
    return CatchUp(run=punctual, missed=missed + len(late), last_tick=last_tick)
