"""The fire times (slots) of a cron expression in an IANA time zone, as UTC instants.

A schedule's slots are the local wall-clock times that its 5-field cron expression matches
(``croniter``, computed on naive local times), each turned into a UTC instant with ``zoneinfo``:

- a wall time that happens twice (clocks go back) fires once, at its first occurrence
  (``fold=0``): "0 * * * *" fires at 01:00 summer time, not again an hour later;
- a wall time that does not happen (clocks go forward) fires shifted by the size of the gap
  (PEP 495, ``fold=0``): 02:30 on a spring-forward night fires at 03:30 summer time. Two slots
  that land on the same instant fire once;
- a time zone without daylight saving (UTC) has evenly spaced slots: use it for strict
  intervals.

A schedule's slots must be the same at every computation (the scheduler recomputes them at
each tick and after a restart), so croniter's random (``R``) and hashed (``H``) fields are
refused: ``R * * * *`` would draw a new minute each time and fire dozens of times an hour.

``next_fire_time(cron, tz, after)`` is the first slot strictly after ``after``;
``latest_fire_time(cron, tz, since, now)`` the last slot in ``[since, now]`` (the misfire rule
of ``services.schedule.scheduler`` fires only that one).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from croniter.croniter import CroniterBadDateError, CroniterError

from star_core.errors import ConfigError

# minute hour day-of-month month day-of-week (the Schedule proto's contract).
CRON_FIELDS = 5
# The largest clock change of daylight saving in tzdata (Antarctica/Troll: 2 h). Slots in the
# gap of a change at most this long before ``after`` are found; one-off offset changes of a
# whole day (Pacific/Apia, 2011) may lose the slots of the skipped day, never fire them early.
MAX_CLOCK_CHANGE = timedelta(hours=2)
# croniter's random ("R", "R(0-29)", "R/5") and hashed ("H", ...) elements of a field.
RANDOM_ELEMENT = re.compile(r"[RrHh](\(\d+-\d+\))?(/\d+)?")
# Candidate wall times examined per call at most (a bound on the work, never reached by a cron
# expression that matches at least once in a few years).
MAX_CANDIDATES = 10_000


def zone(name: str) -> ZoneInfo:
    """The IANA time zone ``name``; ConfigError(field="timezone") if unknown."""
    try:
        if not name:
            raise ValueError("empty")
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as err:
        raise ConfigError(
            "timezone", f"timezone {name!r} is not an IANA time zone (e.g. UTC, Europe/Zurich)"
        ) from err


def check_cron(expression: str) -> str:
    """``expression`` with single spaces; ConfigError(field="cron") unless it is a valid
    5-field cron expression (minute hour day-of-month month day-of-week) without random or
    hashed fields."""
    fields = expression.split()
    if len(fields) != CRON_FIELDS:
        raise ConfigError(
            "cron",
            f"cron {expression!r} must have {CRON_FIELDS} fields"
            " (minute hour day-of-month month day-of-week), e.g. '0 3 * * *'",
        )
    normalized = " ".join(fields)
    if any(RANDOM_ELEMENT.fullmatch(e) for field in fields for e in field.split(",")):
        raise ConfigError(
            "cron",
            f"cron {expression!r} has a random (R) or hashed (H) field: its times would change"
            " at every computation; give fixed values, e.g. '17 * * * *'",
        )
    try:
        croniter(normalized, datetime(2000, 1, 1))
    except (CroniterError, ValueError, KeyError) as err:
        raise ConfigError("cron", f"cron {expression!r} is not valid: {err}") from err
    return normalized


def _instant(wall: datetime, tz: ZoneInfo) -> datetime:
    """A naive local wall time as a UTC instant (fold=0: first occurrence, gaps shift)."""
    return wall.replace(tzinfo=tz, fold=0).astimezone(UTC)


def _wall(instant: datetime, tz: ZoneInfo) -> datetime:
    return instant.astimezone(tz).replace(tzinfo=None)


def _utc_offset(instant: datetime, tz: ZoneInfo) -> timedelta:
    """The offset from UTC of ``tz`` at ``instant`` (a ZoneInfo always has one)."""
    return instant.astimezone(tz).utcoffset() or timedelta(0)


def _check_aware(time: datetime, name: str) -> None:
    if time.tzinfo is None:
        raise ValueError(f"{name} {time!r} must be timezone-aware")


def _next_slot(expression: str, tz: ZoneInfo, after: datetime) -> datetime:
    """The first slot strictly after ``after`` (see the module docstring)."""
    # a clock change forward shortly before ``after`` moved the slots of its gap to after it:
    # start the scan before the gap
    change = _utc_offset(after, tz) - _utc_offset(after - MAX_CLOCK_CHANGE, tz)
    candidates = croniter(expression, _wall(after, tz) - max(change, timedelta(0)))
    best = None
    for _ in range(MAX_CANDIDATES):
        try:
            wall = candidates.get_next(datetime)
        except CroniterBadDateError:
            break
        # later wall times become later instants, except in a gap (shifted by its size), and
        # a gap slot's instant is past its own wall time: nothing from here on is earlier
        if best is not None and wall >= _wall(best, tz):
            return best
        instant = _instant(wall, tz)
        if instant > after and (best is None or instant < best):
            best = instant
    if best is None:
        raise ConfigError("cron", f"cron {expression!r} matches no date after {after.isoformat()}")
    return best


def next_fire_time(cron: str, timezone: str, after: datetime) -> datetime:
    """The first slot of ``cron`` in ``timezone`` strictly after ``after`` (UTC).

    ConfigError with field "cron" (not 5 valid fields, or it never matches a date such as
    "0 0 30 2 *") or "timezone" (not an IANA name).
    """
    _check_aware(after, "after")
    tz = zone(timezone)
    return _next_slot(check_cron(cron), tz, after)


def latest_fire_time(cron: str, timezone: str, since: datetime, now: datetime) -> datetime:
    """The last slot in ``[since, now]``; ``since`` must be a slot at or before ``now``."""
    _check_aware(since, "since")
    _check_aware(now, "now")
    if since > now:
        raise ValueError(f"since {since.isoformat()} is after now {now.isoformat()}")
    tz, expression = zone(timezone), check_cron(cron)
    slot = since
    try:  # jump near ``now`` (after days of downtime), then step forward exactly
        guess = _instant(croniter(expression, _wall(now, tz)).get_prev(datetime), tz)
    except CroniterBadDateError:
        guess = since
    if since < guess <= now:
        slot = guess
    while (following := _next_slot(expression, tz, slot)) <= now:
        slot = following
    return slot
