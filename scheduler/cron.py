"""Cron arithmetic: validation and next fire times in the schedule's IANA zone.

The arithmetic is cronsim's (Vixie/Debian semantics: weekday 0 = Sunday, day-of-month OR
day-of-week when both are restricted, ``L``, ``#``, names), wrapped with one DST rule:

- **Wall-clock schedules** (the minute *and* the hour field are fixed, e.g. ``30 2 * * *``) are
  matched on the local wall clock. A tick whose local time falls into a DST gap fires at the first
  instant after the gap (02:30 on a spring-forward night fires at 03:00); several ticks in one gap
  fire once. A tick whose local time occurs twice (a fold) fires once, at the first occurrence.
- **Hourly and finer schedules** (the minute or the hour field is a wildcard: ``*``, ``*/15``,
  ``0 * * * *``) follow real elapsed time: local times that do not exist are not fired, local times
  that occur twice fire at both (they are distinct instants, an hour apart).

cronsim applies the wall-clock rule itself to 5-field expressions only; a 6-field (seconds)
expression with a fixed minute and hour would skip the gap and fire twice in the fold, so the
wall-clock case is computed here, on naive local times, for both forms.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from core.errors import BadRequest

ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
FIELDS = ("second", "minute", "hour", "day-of-month", "month", "day-of-week")
ALLOWED = {
    "second": "0-59",
    "minute": "0-59",
    "hour": "0-23",
    "day-of-month": "1-31 or L",
    "month": "1-12 or JAN-DEC",
    "day-of-week": "0-7 or SUN-SAT (0 and 7 are Sunday), 5L, 5#2",
}
_EPOCH = datetime(2000, 1, 1)


class InvalidSchedule(BadRequest):
    """The schedule's cron expression or timezone is invalid."""


def parse_zone(name: str) -> ZoneInfo:
    """The IANA zone ``name``, or :class:`InvalidSchedule` naming it."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise InvalidSchedule(
            f"timezone: unknown zone {name!r}; use an IANA name such as 'Europe/London' or 'UTC'"
        ) from exc


@dataclass(frozen=True, slots=True)
class Cron:
    """A validated cron expression in a zone; every time it returns is timezone-aware UTC."""

    expression: str
    zone: ZoneInfo
    fields: tuple[str, ...]
    """The six fields (a missing seconds field is ``0``)."""

    @property
    def wall_clock(self) -> bool:
        """Fixed minute and hour: matched on the local wall clock (see the module docstring)."""
        return not self.fields[1].startswith("*") and not self.fields[2].startswith("*")

    @property
    def _expr(self) -> str:
        return " ".join(self.fields)

    def next_after(self, moment: datetime) -> datetime | None:
        """The first fire time strictly after ``moment``; ``None`` if there is none in 50 years."""
        return next(self.fire_times(moment), None)

    def fire_times(self, after: datetime) -> Iterator[datetime]:
        """Fire times strictly after ``after``, in order, without end."""
        after = after.astimezone(UTC)
        if self.wall_clock:
            yield from self._wall_clock_times(after)
            return
        local = after.astimezone(self.zone)
        for candidate in CronSim(self._expr, local):
            fire = candidate.astimezone(UTC)
            if fire > after:
                yield fire

    def _wall_clock_times(self, after: datetime) -> Iterator[datetime]:
        naive_start = after.astimezone(self.zone).replace(tzinfo=None)
        last = after
        for naive in CronSim(self._expr, naive_start):
            fire = self._first_real_instant(naive)
            # A fold's second hour maps back onto its first: skip what is not after ``last``;
            # several ticks in one gap land on the same instant and fire once.
            if fire > last:
                last = fire
                yield fire

    def _first_real_instant(self, naive: datetime) -> datetime:
        """``naive`` local time as UTC: first occurrence in a fold, gap end in a gap."""
        local = naive.replace(tzinfo=self.zone, fold=0)
        if _exists(local):
            return local.astimezone(UTC)
        probe = naive.replace(second=0)
        while not _exists(probe.replace(tzinfo=self.zone)):
            probe += timedelta(minutes=1)
        return probe.replace(tzinfo=self.zone).astimezone(UTC)

    def preview(self, after: datetime, count: int) -> list[datetime]:
        """The next ``count`` fire times after ``after``."""
        times: list[datetime] = []
        for fire in self.fire_times(after):
            times.append(fire)
            if len(times) >= count:
                break
        return times

    def dst_note(self, fire: datetime, previous: datetime | None) -> str | None:
        """What DST does to ``fire`` (one of :meth:`fire_times`, after ``previous``), said for
        a person checking a schedule before trusting it; ``None`` when nothing."""
        local = fire.astimezone(self.zone)
        naive = local.replace(tzinfo=None)
        shown = local.strftime("%H:%M")
        if local.replace(fold=0).utcoffset() != local.replace(fold=1).utcoffset():
            if self.wall_clock:
                return f"DST fold: {shown} happens twice that night; it fires once, at the first"
            return f"DST fold: {shown} happens twice that night; it fires at both"
        if self.wall_clock:
            matched = next(CronSim(self._expr, naive - timedelta(seconds=1)), None)
            if matched != naive:
                return f"DST gap: its time does not exist that night; it fires at {shown} instead"
            return None
        if previous is not None:
            before = previous.astimezone(self.zone).utcoffset()
            after = local.utcoffset()
            if before is not None and after is not None and after > before:
                return "after a DST gap: the local times the clocks skip do not fire"
        return None


def _exists(local: datetime) -> bool:
    return local.replace(tzinfo=None) == local.astimezone(UTC).astimezone(local.tzinfo).replace(
        tzinfo=None
    )


def parse_cron(expression: str, timezone: str = "UTC") -> Cron:
    """Validate ``expression`` (5 fields, or 6 with leading seconds, or an ``@`` alias) in
    ``timezone``; errors name the bad field and its value."""
    zone = parse_zone(timezone)
    text = " ".join(expression.split())
    if text.startswith("@"):
        if text.lower() not in ALIASES:
            raise InvalidSchedule(
                f"cron_expression {expression!r}: unknown alias; use one of "
                + ", ".join(sorted(ALIASES))
            )
        text = ALIASES[text.lower()]
    parts = text.split()
    if len(parts) not in (5, 6):
        raise InvalidSchedule(
            f"cron_expression {expression!r}: expected 5 fields (minute hour day-of-month month "
            f"day-of-week), optionally preceded by a seconds field, or an @alias; got {len(parts)}"
        )
    fields = tuple(parts if len(parts) == 6 else ["0", *parts])
    try:
        simulation = CronSim(" ".join(fields), _EPOCH)
        next(simulation)
    except CronSimError as exc:
        raise InvalidSchedule(_field_message(expression, fields, len(parts), str(exc))) from exc
    except StopIteration as exc:
        raise InvalidSchedule(
            f"cron_expression {expression!r}: never fires (no matching date)"
        ) from exc
    return Cron(expression=expression.strip(), zone=zone, fields=fields)


def _field_message(expression: str, fields: tuple[str, ...], given: int, error: str) -> str:
    for index, name in enumerate(FIELDS):
        if error.lower() == f"bad {name}":
            position = index + 1 if given == 6 else index
            return (
                f"cron_expression {expression!r}: bad {name} field {fields[index]!r} "
                f"(field {position} of {given}; allowed: {ALLOWED[name]}, lists a,b, ranges a-b, "
                "steps */n)"
            )
    return f"cron_expression {expression!r}: {error}"
