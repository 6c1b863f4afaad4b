"""Ticks that passed while no scheduler ran, and what the misfire policy makes of them.

Computed when a leader starts (and when it picks up a new or changed schedule) from the
schedule's ``last_fire_at`` (or its last definition change, if later). A tick's lateness is
measured from the moment it was meant to fire: its fire time plus its jitter delay. Ticks less
than ``on_time`` seconds late are not misfires: they are the change-pickup latency, and fire
normally under every policy. When a leader takes over, the window is ``takeover_grace`` instead
(at least the fail-over time): the previous leader may have died before submitting those ticks,
and submitting one it did submit makes no second run (the idempotency key). Older ones within
``misfire_grace``: ``skip`` counts them as missed, ``run_once`` runs the latest of them (one
catch-up run), ``run_all`` runs each with its own fire time. Ticks older than the grace are missed
under every policy.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import islice

from scheduler.cron import Cron
from scheduler.models import MisfirePolicy

COUNT_LIMIT = 10_000
"""Missed ticks counted per catch-up, at most (a per-second schedule down for a week)."""
RUN_LIMIT = 1_000
"""Catch-up runs per schedule, at most (the latest ones); older ticks count as missed."""


def _no_delay(tick: datetime) -> float:
    return 0.0


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
    delay: Callable[[datetime], float] = _no_delay,
    recheck: float = 0.0,
) -> CatchUp:
    """What to do with the ticks in ``(since, now]``.

    ``delay(tick)``: the tick's jitter delay in seconds; a tick is late by
    ``now - (tick + delay(tick))``. ``recheck``: ticks in ``(since - recheck, since]`` that are
    still on time are run again (a previous leader records ``last_fire_at`` per schedule, and with
    jitter a later tick can be recorded before an earlier one was submitted); they are never
    counted as missed, since they may well have been fired.
    """
    on_time_from = now - timedelta(seconds=on_time)

    def punctual(tick: datetime) -> bool:
        return tick + timedelta(seconds=delay(tick)) > on_time_from

    runnable_from = min(on_time_from, now - timedelta(seconds=grace))
    missed = 0
    start = since
    if since < runnable_from:
        # Ticks too old to run: count them (up to a limit) and continue after them. A jittered
        # tick is too old when even its delayed fire moment is before the window.
        for tick in islice(cron.fire_times(since), COUNT_LIMIT):
            if tick > runnable_from or punctual(tick):
                break
            missed += 1
            start = tick
        else:
            start = max(start, runnable_from)
    rechecked = _rechecked(cron, since, recheck, punctual)
    late: deque[datetime] = deque(maxlen=RUN_LIMIT)
    on_time_ticks: list[datetime] = []
    overflow = 0
    for tick in cron.fire_times(start):
        if tick > now:
            break
        if punctual(tick):
            on_time_ticks.append(tick)
        else:
            if len(late) == late.maxlen:
                overflow += 1
            late.append(tick)
    missed += overflow
    last_tick = max([*late, *on_time_ticks], default=None)
    if last_tick is None and missed:
        last_tick = start
    if policy == MisfirePolicy.RUN_ALL:
        return CatchUp(run=[*rechecked, *late, *on_time_ticks], missed=missed, last_tick=last_tick)
    if policy == MisfirePolicy.RUN_ONCE and late:
        return CatchUp(
            run=[*rechecked, late[-1], *on_time_ticks],
            missed=missed + len(late) - 1,
            last_tick=last_tick,
        )
    return CatchUp(run=[*rechecked, *on_time_ticks], missed=missed + len(late), last_tick=last_tick)


def _rechecked(
    cron: Cron, since: datetime, recheck: float, punctual: Callable[[datetime], bool]
) -> list[datetime]:
    if recheck <= 0:
        return []
    found: list[datetime] = []
    for tick in cron.fire_times(since - timedelta(seconds=recheck)):
        if tick > since:
            break
        if punctual(tick):
            found.append(tick)
    return found
