"""Next fire times: the APScheduler trigger (clock injected through ``now``) against cronsim, and
the DST rule of the README in America/New_York and Europe/London."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from cronsim import CronSim

from scheduler.cron import InvalidSchedule, parse_cron
from scheduler.targets import parse_deliver_to
from scheduler.trigger import CronTrigger

NY = "America/New_York"
LONDON = "Europe/London"
SPRING_NY = "2024-03-09T12:00:00+00:00"  # the night of 10 March 2024: 02:00-03:00 does not exist
FALL_NY = "2024-11-02T12:00:00+00:00"  # the night of 3 November 2024: 01:00-02:00 happens twice
SPRING_LONDON = "2024-03-30T12:00:00+00:00"  # 31 March 2024: 01:00-02:00 does not exist
FALL_LONDON = "2024-10-26T12:00:00+00:00"  # 27 October 2024: 01:00-02:00 happens twice
PLAIN = "2024-05-15T10:20:30+00:00"

# (expression, zone, injected "now"): ours must match cronsim's sequence exactly.
TABLE = [
    ("* * * * *", "UTC", PLAIN),
    ("*/5 * * * *", "UTC", PLAIN),
    ("0 * * * *", "UTC", PLAIN),
    ("15,45 * * * *", "UTC", PLAIN),
    ("0 9 * * *", "UTC", PLAIN),
    ("0 9 * * MON-FRI", "UTC", PLAIN),
    ("0 9 * * 1-5", "Asia/Tokyo", PLAIN),
    ("30 17 * * FRI", "UTC", PLAIN),
    ("0 0 1 * *", "UTC", PLAIN),
    ("0 0 L * *", "UTC", PLAIN),
    ("0 0 * * 5L", "UTC", PLAIN),
    ("0 0 * * 1#2", "UTC", PLAIN),
    ("0 0 13 * 5", "UTC", PLAIN),  # day-of-month OR day-of-week (Vixie)
    ("0 0 * * 0", "UTC", PLAIN),  # 0 = Sunday
    ("0 0 * * 7", "UTC", PLAIN),  # 7 = Sunday too
    ("0 12 29 2 *", "UTC", PLAIN),
    ("0 0 1 JAN,JUL *", "UTC", PLAIN),
    ("0 6-18/4 * * *", "UTC", PLAIN),
    ("5 4 * * sun", "UTC", PLAIN),
    ("0 0 1 1 *", "Australia/Sydney", PLAIN),
    ("*/10 * * * * *", "UTC", PLAIN),
    ("30 * * * * *", "UTC", PLAIN),
    ("0 */15 * * * *", "Europe/Berlin", PLAIN),
    # Across DST, 5-field: cronsim's own (Debian) handling is the rule we document.
    ("30 2 * * *", NY, SPRING_NY),
    ("0 2 * * *", NY, SPRING_NY),
    ("59 2 * * *", NY, SPRING_NY),
    ("30 1 * * *", NY, FALL_NY),
    ("0 1 * * *", NY, FALL_NY),
    ("*/30 * * * *", NY, SPRING_NY),
    ("*/30 * * * *", NY, FALL_NY),
    ("0 * * * *", NY, FALL_NY),
    ("0 */2 * * *", NY, SPRING_NY),
    ("30 1 * * *", LONDON, SPRING_LONDON),
    ("30 1 * * *", LONDON, FALL_LONDON),
    ("0 1 * * SUN", LONDON, FALL_LONDON),
    ("*/20 * * * *", LONDON, SPRING_LONDON),
    ("15 * * * *", LONDON, FALL_LONDON),
    ("0 9 * * *", LONDON, SPRING_LONDON),
    ("0 0 * * *", NY, FALL_NY),
    ("* 1 * * *", NY, FALL_NY),
    ("0 * * * * *", NY, FALL_NY),
]


def trigger_times(expression: str, zone: str, now: datetime, count: int) -> list[datetime]:
    """What APScheduler would get from our trigger, with ``now`` injected."""
    trigger = CronTrigger(parse_cron(expression, zone))
    times: list[datetime] = []
    previous: datetime | None = None
    while len(times) < count:
        fire = trigger.get_next_fire_time(previous, now)
        assert fire is not None
        times.append(fire)
        previous = fire
    return times


def cronsim_times(expression: str, zone: str, now: datetime, count: int) -> list[datetime]:
    """cronsim's times from ``now`` on (APScheduler asks for the first fire time at or after it)."""
    iterator = CronSim(expression, (now - timedelta(microseconds=1)).astimezone(ZoneInfo(zone)))
    return [next(iterator).astimezone(UTC) for _ in range(count)]


@pytest.mark.parametrize(("expression", "zone", "now"), TABLE)
def test_next_fire_times_match_cronsim(expression: str, zone: str, now: str) -> None:
    injected = datetime.fromisoformat(now)
    count = 60 if "*" in expression.split()[0] else 8
    assert trigger_times(expression, zone, injected, count) == cronsim_times(
        expression, zone, injected, count
    )


def local(text: str, zone: str, fold: int = 0) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(zone), fold=fold).astimezone(UTC)


@pytest.mark.parametrize(
    ("expression", "zone", "now", "expected"),
    [
        # Gap: a wall-clock tick fires at the first instant after the gap, 5 or 6 fields.
        ("30 2 * * *", NY, SPRING_NY, ["2024-03-10T03:00", "2024-03-11T02:30"]),
        ("0 30 2 * * *", NY, SPRING_NY, ["2024-03-10T03:00", "2024-03-11T02:30"]),
        ("0,30 2 * * *", NY, SPRING_NY, ["2024-03-10T03:00", "2024-03-11T02:00"]),
        ("30 1 * * *", LONDON, SPRING_LONDON, ["2024-03-31T02:00", "2024-04-01T01:30"]),
        ("15 30 1 * * *", LONDON, SPRING_LONDON, ["2024-03-31T02:00", "2024-04-01T01:30:15"]),
        # Fold: once, at the first occurrence.
        ("30 1 * * *", NY, FALL_NY, ["2024-11-03T01:30", "2024-11-04T01:30"]),
        ("0 30 1 * * *", NY, FALL_NY, ["2024-11-03T01:30", "2024-11-04T01:30"]),
        ("30 1 * * *", LONDON, FALL_LONDON, ["2024-10-27T01:30", "2024-10-28T01:30"]),
        ("0 30 1 * * *", LONDON, FALL_LONDON, ["2024-10-27T01:30", "2024-10-28T01:30"]),
    ],
)
def test_dst_rule_for_wall_clock_schedules(
    expression: str, zone: str, now: str, expected: list[str]
) -> None:
    times = trigger_times(expression, zone, datetime.fromisoformat(now), len(expected))
    assert times == [local(text, zone) for text in expected]


def test_hourly_schedules_follow_real_time_through_a_fold() -> None:
    times = trigger_times("0 * * * *", NY, datetime(2024, 11, 3, 4, 30, tzinfo=UTC), 3)
    assert times == [
        local("2024-11-03T01:00", NY, fold=0),
        local("2024-11-03T01:00", NY, fold=1),
        local("2024-11-03T02:00", NY),
    ]
    assert times[1] - times[0] == times[2] - times[1] == timedelta(hours=1)


def test_hourly_schedules_skip_hours_that_do_not_exist() -> None:
    times = trigger_times("30 * * * *", NY, datetime(2024, 3, 10, 6, 0, tzinfo=UTC), 2)
    assert times == [local("2024-03-10T01:30", NY), local("2024-03-10T03:30", NY)]


def test_start_inside_a_fold_never_goes_back_in_time() -> None:
    second_one_am = local("2024-11-03T01:10", NY, fold=1)
    fire = parse_cron("30 1 * * *", NY).next_after(second_one_am)
    assert fire == local("2024-11-04T01:30", NY)


@pytest.mark.parametrize(
    ("expression", "aliased"),
    [("@hourly", "0 * * * *"), ("@daily", "0 0 * * *"), ("@weekly", "0 0 * * 0"),
     ("@monthly", "0 0 1 * *"), ("@yearly", "0 0 1 1 *")],
)  # fmt: skip
def test_aliases(expression: str, aliased: str) -> None:
    now = datetime.fromisoformat(PLAIN)
    assert trigger_times(expression, "UTC", now, 3) == cronsim_times(aliased, "UTC", now, 3)


@pytest.mark.parametrize(
    ("expression", "zone", "message"),
    [
        ("61 * * * *", "UTC", "bad minute field '61' (field 1 of 5"),
        ("0 25 * * *", "UTC", "bad hour field '25'"),
        ("0 0 32 * *", "UTC", "bad day-of-month field '32'"),
        ("0 0 * 13 *", "UTC", "bad month field '13'"),
        ("0 0 * * FUNDAY", "UTC", "bad day-of-week field 'FUNDAY'"),
        ("75 0 0 * * *", "UTC", "bad second field '75' (field 1 of 6"),
        ("0 0 * *", "UTC", "expected 5 fields"),
        ("@fortnightly", "UTC", "unknown alias"),
        ("0 0 * * *", "Europe/Atlantis", "timezone: unknown zone 'Europe/Atlantis'"),
    ],
)
def test_invalid_schedules_name_the_bad_field(expression: str, zone: str, message: str) -> None:
    with pytest.raises(InvalidSchedule) as caught:
        parse_cron(expression, zone)
    assert message in caught.value.detail


def test_deliver_to_builds_the_agreed_reply_targets() -> None:
    assert parse_deliver_to(None).channel == "none"
    assert parse_deliver_to("none").channel == "none"
    slack = parse_deliver_to("slack:C0123ABC")
    assert (slack.channel, slack.address, slack.thread_id, slack.details) == (
        "slack", "C0123ABC", None, {},
    )  # fmt: skip
    # OAuth installs only: the team names the workspace whose bot token the sender uses.
    team = parse_deliver_to("slack:T0TEAM42/C0123ABC")
    assert (team.channel, team.address, team.details) == (
        "slack",
        "C0123ABC",
        {"team_id": "T0TEAM42"},
    )
    whatsapp = parse_deliver_to("whatsapp:+15551234567")
    assert (whatsapp.channel, whatsapp.address, whatsapp.details) == (
        "whatsapp", "whatsapp:+15551234567", {},
    )  # fmt: skip
    email = parse_deliver_to("email:alice@example.com")
    assert (email.channel, email.address, email.details) == ("email", "alice@example.com", {})
    webhook = parse_deliver_to("webhook:https://example.com/hook?a=1")
    assert (webhook.channel, webhook.address) == ("webhook", "https://example.com/hook?a=1")
    for bad in (
        "slack:",
        "slack:T1/",
        "slack:C1/C2",
        "whatsapp:5551234",
        "email:nobody",
        "webhook:ftp://x",
        "fax:123",
    ):
        with pytest.raises(InvalidSchedule, match="deliver_to"):
            parse_deliver_to(bad)


def _notes(expression: str, zone: str, after: datetime, count: int) -> list[str | None]:
    cron = parse_cron(expression, zone)
    times = cron.preview(after, count)
    return [
        cron.dst_note(fire, previous)
        for fire, previous in zip(times, [None, *times][:-1], strict=True)
    ]


def test_dst_notes_name_the_gap_and_the_fold_of_a_wall_clock_schedule() -> None:
    spring = _notes("30 2 * * *", "America/New_York", datetime(2027, 3, 13, tzinfo=UTC), 3)
    assert spring[0] is None
    assert spring[1] is not None and spring[1].startswith("DST gap")
    assert spring[2] is None
    autumn = _notes("30 1 * * *", "America/New_York", datetime(2027, 11, 6, 12, tzinfo=UTC), 2)
    assert autumn[0] is not None and "fires once" in autumn[0]
    assert autumn[1] is None


def test_dst_notes_of_an_hourly_schedule_say_it_fires_at_both_fold_hours() -> None:
    notes = _notes("30 * * * *", "Europe/London", datetime(2027, 10, 30, 23, 0, tzinfo=UTC), 4)
    assert [note is not None and "fires at both" in note for note in notes] == [
        False,
        True,
        True,
        False,
    ]
