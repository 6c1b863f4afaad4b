"""Catch-up planning (``scheduler.misfire``) with an injected "now": the take-over grace, lateness
measured from fire time plus jitter, re-checked ticks, and fire state that never moves back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from scheduler.cron import parse_cron
from scheduler.engine import jitter_delay
from scheduler.misfire import plan_catch_up
from scheduler.models import MisfirePolicy
from scheduler.store import TickRecord

EVERY_SECOND = parse_cron("* * * * * *", "UTC")
DAILY_NINE = parse_cron("0 9 * * *", "UTC")
T0 = datetime(2030, 1, 1, 10, 0, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_ticks_of_a_fail_over_fire_once_under_skip() -> None:
    # The previous leader recorded 10:00:00 and died; the standby leads 4.6 s later.
    plan = plan_catch_up(EVERY_SECOND, MisfirePolicy.SKIP, 3600, at(0), at(4.6), on_time=10)
    assert plan.run == [at(1), at(2), at(3), at(4)]
    assert plan.missed == 0 and plan.last_tick == at(4)


def test_change_pickup_keeps_the_short_window() -> None:
    # The same ticks seen at a change pickup (on_time 2 s): the older ones are misfires.
    plan = plan_catch_up(EVERY_SECOND, MisfirePolicy.SKIP, 3600, at(0), at(4.6), on_time=2)
    assert plan.run == [at(3), at(4)]
    assert plan.missed == 2 and plan.last_tick == at(4)


def test_ticks_older_than_the_take_over_grace_follow_the_policy() -> None:
    # A whole-cluster outage of a minute: only the last 10 s count as the hand-over.
    skip = plan_catch_up(EVERY_SECOND, MisfirePolicy.SKIP, 3600, at(0), at(60.5), on_time=10)
    assert skip.run == [at(s) for s in range(51, 61)]
    assert skip.missed == 50
    once = plan_catch_up(EVERY_SECOND, MisfirePolicy.RUN_ONCE, 3600, at(0), at(60.5), on_time=10)
    assert once.run == [at(50), *skip.run] and once.missed == 49
    beyond_grace = plan_catch_up(
        EVERY_SECOND, MisfirePolicy.RUN_ALL, 20, at(0), at(60.5), on_time=10
    )
    assert beyond_grace.run[0] == at(41) and beyond_grace.missed == 40


def test_lateness_is_measured_from_the_jittered_moment() -> None:
    nine = datetime(2030, 1, 2, 9, tzinfo=UTC)
    since = nine - timedelta(days=1)
    now = nine + timedelta(seconds=33)  # the leader died in the tick's 30 s jitter sleep

    def delay(tick: datetime) -> float:
        return 30.0

    jittered = plan_catch_up(
        DAILY_NINE, MisfirePolicy.SKIP, 3600, since, now, on_time=10, delay=delay
    )
    assert jittered.run == [nine] and jittered.missed == 0
    # Without its jitter the same tick is 33 s late: a misfire under skip.
    plain = plan_catch_up(DAILY_NINE, MisfirePolicy.SKIP, 3600, since, now, on_time=10)
    assert plain.run == [] and plain.missed == 1 and plain.last_tick == nine


def test_ticks_recorded_out_of_order_are_checked_again() -> None:
    # With jitter the old leader recorded 10:00:05 while 10:00:04 still slept: re-submit the
    # recent ticks up to the recorded one (a tick that was made makes no second run).
    plan = plan_catch_up(
        EVERY_SECOND, MisfirePolicy.SKIP, 3600, at(5), at(6.5), on_time=10, recheck=2.5
    )
    assert plan.run == [at(3), at(4), at(5), at(6)]
    assert plan.missed == 0 and plan.last_tick == at(6)
    # Old ticks are never re-checked, however long the window.
    stale = plan_catch_up(
        EVERY_SECOND, MisfirePolicy.SKIP, 3600, at(5), at(30), on_time=10, recheck=2.5
    )
    assert stale.run == [at(s) for s in range(21, 31)]


def test_jitter_delay_is_within_the_bound_and_the_same_on_every_node() -> None:
    delays = [jitter_delay("report", at(s), 5.0) for s in range(200)]
    assert all(0 <= d < 5.0 for d in delays)
    assert max(delays) > 4.0 and min(delays) < 1.0  # spread over the range, not constant
    assert delays == [jitter_delay("report", at(s), 5.0) for s in range(200)]
    assert jitter_delay("report", at(0), 0) == 0.0


def test_an_older_record_merged_later_does_not_rewind_the_fire_state() -> None:
    live = TickRecord("s", "default", last_fire_at=at(10), next_fire_at=at(11), fired=1)
    catch_up = TickRecord("s", "default", last_fire_at=at(3), next_fire_at=at(4), fired=1, missed=2)
    live.merge(catch_up)
    assert (live.last_fire_at, live.next_fire_at) == (at(10), at(11))
    assert (live.fired, live.missed) == (2, 2)
    adoption = TickRecord("s", "default", next_fire_at=at(12))
    live.merge(adoption)
    assert live.next_fire_at == at(12)
