"""Cron slots in a time zone: next_fire_time and latest_fire_time, across DST changes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.schedule import latest_fire_time, next_fire_time
from star_core.errors import ConfigError

# 2030-03-10 02:00 EST -> 03:00 EDT; 2030-11-03 02:00 EDT -> 01:00 EST
NEW_YORK = "America/New_York"


def utc(month: int, day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2030, month, day, hour, minute, tzinfo=UTC)


def slots(cron: str, timezone: str, after: datetime, count: int) -> list[datetime]:
    out = []
    for _ in range(count):
        after = next_fire_time(cron, timezone, after)
        out.append(after)
    return out


def test_next_fire_time_is_strictly_after():
    assert next_fire_time("0 3 * * *", "UTC", utc(1, 1, 2, 59)) == utc(1, 1, 3)
    assert next_fire_time("0 3 * * *", "UTC", utc(1, 1, 3)) == utc(1, 2, 3)
    assert next_fire_time("0 3 * * *", "Europe/Zurich", utc(1, 1, 0)) == utc(1, 1, 2)  # CET
    assert next_fire_time("0 3 * * *", "Europe/Zurich", utc(7, 1, 0)) == utc(7, 1, 1)  # CEST
    with pytest.raises(ValueError):
        next_fire_time("0 3 * * *", "UTC", datetime(2030, 1, 1))  # naive


def test_spring_forward_shifts_the_missing_wall_times_by_the_gap():
    # 02:30 does not exist on 03-10: it fires at 03:30 EDT (07:30 UTC), once
    assert slots("30 2 * * *", NEW_YORK, utc(3, 8, 12), 4) == [
        utc(3, 9, 7, 30),
        utc(3, 10, 7, 30),
        utc(3, 11, 6, 30),
        utc(3, 12, 6, 30),
    ]
    # every 30 minutes: 02:00 and 02:30 coincide with 03:00 and 03:30 EDT; no slot is doubled
    assert slots("*/30 * * * *", NEW_YORK, utc(3, 10, 6), 4) == [
        utc(3, 10, 6, 30),
        utc(3, 10, 7),
        utc(3, 10, 7, 30),
        utc(3, 10, 8),
    ]
    # a shifted slot after an earlier one of the same night is not lost
    assert slots("45 2 * * *", NEW_YORK, utc(3, 10, 7), 1) == [utc(3, 10, 7, 45)]


def test_fall_back_fires_an_ambiguous_wall_time_once():
    # 01:30 happens twice on 11-03: it fires at the first (EDT, 05:30 UTC) only
    assert slots("30 1 * * *", NEW_YORK, utc(11, 2, 12), 3) == [
        utc(11, 3, 5, 30),
        utc(11, 4, 6, 30),
        utc(11, 5, 6, 30),
    ]
    assert next_fire_time("30 1 * * *", NEW_YORK, utc(11, 3, 5, 45)) == utc(11, 4, 6, 30)
    # hourly: 01:00 EDT, then 02:00 EST (the second 01:00 is the same wall time)
    assert slots("0 * * * *", NEW_YORK, utc(11, 3, 4), 3) == [
        utc(11, 3, 5),
        utc(11, 3, 7),
        utc(11, 3, 8),
    ]


def test_latest_fire_time_is_the_last_slot_up_to_now():
    since = utc(1, 1, 3)
    assert latest_fire_time("0 3 * * *", "UTC", since, utc(1, 1, 3)) == since
    assert latest_fire_time("0 3 * * *", "UTC", since, utc(1, 6, 2, 59)) == utc(1, 5, 3)
    assert latest_fire_time("0 3 * * *", "UTC", since, utc(1, 6, 3)) == utc(1, 6, 3)
    # two months of a per-minute schedule: the last minute, found without walking every slot
    now = utc(3, 1, 12, 30) + timedelta(seconds=59)
    assert latest_fire_time("* * * * *", "UTC", since, now) == utc(3, 1, 12, 30)
    # across the spring-forward gap
    assert latest_fire_time("30 2 * * *", NEW_YORK, utc(3, 9, 7, 30), utc(3, 10, 7, 40)) == utc(
        3, 10, 7, 30
    )
    with pytest.raises(ValueError):
        latest_fire_time("0 3 * * *", "UTC", utc(1, 2, 3), utc(1, 1, 3))


@pytest.mark.parametrize(
    ("cron", "timezone", "field"),
    [
        ("", "UTC", "cron"),
        ("0 3 * *", "UTC", "cron"),
        ("0 3 * * * *", "UTC", "cron"),  # seconds or years: not the 5-field contract
        ("61 3 * * *", "UTC", "cron"),
        ("H 3 * * *", "UTC", "cron"),
        ("0 0 31 4 *", "UTC", "cron"),  # no 31 April
        ("0 3 * * *", "", "timezone"),
        ("0 3 * * *", "Europe/Atlantis", "timezone"),
        ("0 3 * * *", "/etc/passwd", "timezone"),
    ],
)
def test_invalid_cron_or_timezone(cron, timezone, field):
    with pytest.raises(ConfigError) as err:
        next_fire_time(cron, timezone, utc(1, 1, 0))
    assert err.value.field == field


@pytest.mark.parametrize(
    "cron",
    ["R * * * *", "r 3 * * *", "0 R * * *", "R(0-29) * * * *", "R/15 * * * *", "5,R * * * *"],
)
def test_random_fields_are_refused(cron):
    """croniter draws an R field again at every computation: "R * * * *" fired 42 times in a
    day. A schedule's slots must not change between two computations."""
    with pytest.raises(ConfigError) as err:
        next_fire_time(cron, "UTC", utc(1, 1, 0))
    assert err.value.field == "cron"
    assert "random (R)" in str(err.value)
    with pytest.raises(ConfigError):
        latest_fire_time(cron, "UTC", utc(1, 1, 0), utc(1, 2, 0))


def test_names_with_r_or_h_are_not_random_fields():
    # March, Friday and Thursday contain the letters, not the fields
    assert next_fire_time("0 3 * mar fri", "UTC", utc(1, 1, 0)) == utc(3, 1, 3)
    assert next_fire_time("0 3 * * thu", "UTC", utc(1, 1, 0)) == utc(1, 3, 3)
