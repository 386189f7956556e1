"""Local-time rules: DST gaps and overlaps, skipped days, anniversaries, zone fallback.

Golden instants are written by hand from the published DST rules, not computed by the code under
test. A gap moves a local time to the first valid instant after it; an overlap takes the first
occurrence (fold=0), so a daily rule fires once.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, available_timezones

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.runtime.timing import (
    date_instant,
    is_valid_zone,
    local_to_utc,
    next_anniversary,
    next_local_time,
    parse_date,
    zone_for,
)

PARIS = ZoneInfo("Europe/Paris")
NEW_YORK = ZoneInfo("America/New_York")
LORD_HOWE = ZoneInfo("Australia/Lord_Howe")
APIA = ZoneInfo("Pacific/Apia")
TOKYO = ZoneInfo("Asia/Tokyo")
NINE = time(9, 0)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def wall(instant: datetime, zone: ZoneInfo) -> datetime:
    """The naive local wall time of an instant."""
    return instant.astimezone(zone).replace(tzinfo=None)


def exists(day: date, at: time, zone: ZoneInfo) -> bool:
    """Whether a local wall time exists (is not in a spring-forward gap)."""
    local = datetime.combine(day, at, tzinfo=zone)
    return wall(local.astimezone(UTC), zone) == local.replace(tzinfo=None)


# ---------------------------------------------------------------- local_to_utc golden cases


@pytest.mark.parametrize(
    ("zone", "day", "at", "expected"),
    [
        # Europe/Paris, spring forward 2025-03-30 02:00 CET → 03:00 CEST (01:00 UTC).
        (PARIS, date(2025, 3, 30), time(1, 59), utc(2025, 3, 30, 0, 59)),
        (PARIS, date(2025, 3, 30), time(2, 0), utc(2025, 3, 30, 1, 0)),
        (PARIS, date(2025, 3, 30), time(2, 30), utc(2025, 3, 30, 1, 0)),
        (PARIS, date(2025, 3, 30), time(2, 15), utc(2025, 3, 30, 1, 0)),
        (PARIS, date(2025, 3, 30), time(2, 59, 59), utc(2025, 3, 30, 1, 0)),
        (PARIS, date(2025, 3, 30), time(3, 0), utc(2025, 3, 30, 1, 0)),
        (PARIS, date(2025, 3, 30), time(9, 0), utc(2025, 3, 30, 7, 0)),
        # Europe/Paris, fall back 2025-10-26 03:00 CEST → 02:00 CET: 02:30 happens twice.
        (PARIS, date(2025, 10, 26), time(2, 30), utc(2025, 10, 26, 0, 30)),
        (PARIS, date(2025, 10, 26), time(3, 0), utc(2025, 10, 26, 2, 0)),
        (PARIS, date(2025, 10, 26), time(9, 0), utc(2025, 10, 26, 8, 0)),
        # America/New_York: 2025-03-09 02:00 EST → 03:00 EDT; 2025-11-02 02:00 EDT → 01:00 EST.
        (NEW_YORK, date(2025, 3, 9), time(2, 30), utc(2025, 3, 9, 7, 0)),
        (NEW_YORK, date(2025, 3, 9), time(3, 0), utc(2025, 3, 9, 7, 0)),
        (NEW_YORK, date(2025, 11, 2), time(1, 30), utc(2025, 11, 2, 5, 30)),
        (NEW_YORK, date(2025, 11, 2), time(2, 0), utc(2025, 11, 2, 7, 0)),
        # Australia/Lord_Howe moves by 30 minutes: +10:30 ↔ +11.
        # 2025-10-05 02:00 → 02:30 (15:30 UTC the day before); 2025-04-06 02:00 → 01:30.
        (LORD_HOWE, date(2025, 10, 5), time(2, 0), utc(2025, 10, 4, 15, 30)),
        (LORD_HOWE, date(2025, 10, 5), time(2, 15), utc(2025, 10, 4, 15, 30)),
        (LORD_HOWE, date(2025, 10, 5), time(2, 30), utc(2025, 10, 4, 15, 30)),
        (LORD_HOWE, date(2025, 4, 6), time(1, 45), utc(2025, 4, 5, 14, 45)),
        (LORD_HOWE, date(2025, 4, 6), time(2, 0), utc(2025, 4, 5, 15, 30)),
        # Pacific/Apia skipped 2011-12-30 entirely (UTC-10 → UTC+14 at 10:00 UTC): every time
        # of that day moves to 2011-12-31 00:00 local.
        (APIA, date(2011, 12, 30), time(0, 0), utc(2011, 12, 30, 10, 0)),
        (APIA, date(2011, 12, 30), time(9, 0), utc(2011, 12, 30, 10, 0)),
        (APIA, date(2011, 12, 30), time(23, 59), utc(2011, 12, 30, 10, 0)),
        (APIA, date(2011, 12, 29), time(9, 0), utc(2011, 12, 29, 19, 0)),
        (APIA, date(2011, 12, 31), time(9, 0), utc(2011, 12, 30, 19, 0)),
    ],
)
def test_local_to_utc_golden(zone: ZoneInfo, day: date, at: time, expected: datetime) -> None:
    got = local_to_utc(day, at, zone)
    assert got == expected
    assert got.utcoffset() == timedelta(0)


def test_gap_gives_first_valid_instant_for_every_second_of_the_gap() -> None:
    # Regression: a float bisection answered 03:00:01 for most times inside the gap.
    first = utc(2025, 3, 30, 1, 0)
    for seconds in range(0, 3600, 7):
        at = (datetime(2025, 3, 30, 2, 0) + timedelta(seconds=seconds)).time()
        assert local_to_utc(date(2025, 3, 30), at, PARIS) == first, at
    assert wall(first, PARIS) == datetime(2025, 3, 30, 3, 0)
    assert wall(first - timedelta(seconds=1), PARIS) == datetime(2025, 3, 30, 1, 59, 59)


# ---------------------------------------------------------------- next_local_time golden cases


def test_next_local_time_moves_a_gap_time_to_three_oclock_paris() -> None:
    at = time(2, 30)
    assert next_local_time(utc(2025, 3, 29, 23, 0), PARIS, at, None) == utc(2025, 3, 30, 1, 0)
    assert next_local_time(utc(2025, 3, 30, 0, 59), PARIS, at, None) == utc(2025, 3, 30, 1, 0)
    # once it has fired, the next one is the next day's 02:30 CEST
    after = next_local_time(utc(2025, 3, 30, 1, 0, 1), PARIS, at, None)
    assert after == utc(2025, 3, 31, 0, 30)


def test_next_local_time_fires_an_ambiguous_time_once_paris() -> None:
    at = time(2, 30)
    fired, now = [], utc(2025, 10, 24, 12, 0)
    while now < utc(2025, 10, 28):
        now = next_local_time(now, PARIS, at, None)
        fired.append(now)
        now += timedelta(seconds=1)
    assert fired[:4] == [
        utc(2025, 10, 25, 0, 30),  # 02:30 CEST
        utc(2025, 10, 26, 0, 30),  # 02:30 CEST, first of the two 02:30s (fold=0)
        utc(2025, 10, 27, 1, 30),  # 02:30 CET; never 01:30 UTC on the 26th
        utc(2025, 10, 28, 1, 30),
    ]


def test_next_local_time_new_york_and_lord_howe() -> None:
    assert next_local_time(utc(2025, 3, 9, 0, 0), NEW_YORK, time(2, 30), None) == utc(
        2025, 3, 9, 7, 0
    )
    assert next_local_time(utc(2025, 11, 2, 0, 0), NEW_YORK, time(1, 30), None) == utc(
        2025, 11, 2, 5, 30
    )
    # after the first 01:30 EDT, the second 01:30 (EST) does not fire again
    assert next_local_time(utc(2025, 11, 2, 5, 30, 1), NEW_YORK, time(1, 30), None) == utc(
        2025, 11, 3, 6, 30
    )
    assert next_local_time(utc(2025, 10, 4, 12, 0), LORD_HOWE, time(2, 15), None) == utc(
        2025, 10, 4, 15, 30
    )
    assert next_local_time(utc(2025, 4, 5, 14, 45, 1), LORD_HOWE, time(1, 45), None) == utc(
        2025, 4, 6, 15, 15
    )


def test_next_local_time_across_the_skipped_day_in_apia() -> None:
    first = next_local_time(utc(2011, 12, 29, 12, 0), APIA, NINE, None)
    assert first == utc(2011, 12, 29, 19, 0)  # 29th 09:00 at UTC-10
    second = next_local_time(first + timedelta(seconds=1), APIA, NINE, None)
    assert second == utc(2011, 12, 30, 10, 0)  # the 30th never existed: 31st 00:00 (+14)
    third = next_local_time(second + timedelta(seconds=1), APIA, NINE, None)
    assert third == utc(2011, 12, 30, 19, 0)  # 31st 09:00 at UTC+14
    assert wall(third, APIA) == datetime(2011, 12, 31, 9, 0)


def test_next_local_time_weekdays() -> None:
    monday_ten = utc(2025, 3, 3, 9, 0)  # Monday 10:00 CET
    mondays = frozenset({0})
    assert next_local_time(monday_ten, PARIS, time(10, 0), mondays) == monday_ten
    assert next_local_time(monday_ten + timedelta(seconds=1), PARIS, time(10, 0), mondays) == utc(
        2025, 3, 10, 9, 0
    )
    # Sunday 23:30 UTC is already Monday 00:30 in Paris: today's 10:00 still counts
    assert next_local_time(utc(2025, 3, 2, 23, 30), PARIS, time(10, 0), mondays) == monday_ten
    # weekdays only: now when allowed, else local midnight of the next allowed day
    wednesday = utc(2025, 3, 5, 12, 0)
    assert next_local_time(wednesday, PARIS, None, frozenset({2})) == wednesday
    assert next_local_time(wednesday, PARIS, None, frozenset({5, 6})) == utc(2025, 3, 7, 23, 0)
    # the weekday is the contact's local one: Tokyo's Thursday starts at 15:00 UTC Wednesday
    assert next_local_time(wednesday, TOKYO, None, frozenset({3})) == utc(2025, 3, 5, 15, 0)


# ---------------------------------------------------------------- property: a daily rule

ZONES = sorted(available_timezones())


def _check_daily(zone: ZoneInfo, start: datetime, at: time, days: int) -> None:
    """Iterate a daily rule: one instant per requested local date, at `at` unless in a gap."""
    first_day = start.astimezone(zone).date()
    now = start
    previous: datetime | None = None
    skipped = 0
    for k in range(days):
        fired = next_local_time(now, zone, at, None)
        assert previous is None or fired > previous
        requested = first_day + timedelta(days=k + skipped)
        if k == 0 and local_to_utc(requested, at, zone) < start:
            requested += timedelta(days=1)
            first_day += timedelta(days=1)
        if previous is not None and local_to_utc(requested, at, zone) == previous:
            # A whole local day was skipped (Pacific/Apia, 2011-12-30): its time and the next
            # day's fell on one instant, which fired once. The rule moves on a day.
            skipped += 1
            requested += timedelta(days=1)
        assert fired == local_to_utc(requested, at, zone), (zone, requested)
        if exists(requested, at, zone):
            assert wall(fired, zone) == datetime.combine(requested, at)
        else:
            # in a gap: the first valid instant after the wanted wall time
            assert wall(fired, zone) > datetime.combine(requested, at)
            assert wall(fired - timedelta(seconds=1), zone) < datetime.combine(requested, at)
        previous = fired
        now = fired + timedelta(seconds=1)


@settings(max_examples=25, deadline=None)
@given(
    zone=st.sampled_from(ZONES),
    start=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2035, 1, 1)),
)
def test_nine_daily_over_two_years_once_per_local_date(zone: str, start: datetime) -> None:
    _check_daily(ZoneInfo(zone), start.replace(tzinfo=UTC), NINE, 731)


@settings(max_examples=40, deadline=None)
@given(
    zone=st.sampled_from(
        [
            "Europe/Paris",
            "America/New_York",
            "America/Santiago",
            "America/Havana",
            "Australia/Lord_Howe",
            "Pacific/Apia",
            "Asia/Gaza",
            "Europe/Dublin",
            "America/Sao_Paulo",
        ]
    ),
    start=st.datetimes(min_value=datetime(2005, 1, 1), max_value=datetime(2030, 1, 1)),
    at=st.sampled_from(
        [time(0, 0), time(0, 30), time(1, 30), time(2, 0), time(2, 30), time(23, 30)]
    ),
)
def test_times_near_transitions_fire_once_per_local_date(
    zone: str, start: datetime, at: time
) -> None:
    # times that fall in gaps and overlaps in zones with odd transitions (midnight, 30 minutes)
    _check_daily(ZoneInfo(zone), start.replace(tzinfo=UTC), at, 400)


# ---------------------------------------------------------------- anniversaries


def test_next_anniversary_this_year_then_next() -> None:
    after = utc(2025, 1, 1)
    found = next_anniversary("1990-05-17", timedelta(0), NINE, PARIS, after)
    assert found == (utc(2025, 5, 17, 7, 0), date(2025, 5, 17))  # 09:00 CEST
    # at the very instant it still counts; one second later it is next year's
    assert (
        next_anniversary("1990-05-17", timedelta(0), NINE, PARIS, utc(2025, 5, 17, 7, 0)) == found
    )
    assert next_anniversary("1990-05-17", timedelta(0), NINE, PARIS, utc(2025, 5, 17, 7, 0, 1)) == (
        utc(2026, 5, 17, 7, 0),
        date(2026, 5, 17),
    )


def test_next_anniversary_feb_29() -> None:
    in_2025 = next_anniversary("1992-02-29", timedelta(0), NINE, PARIS, utc(2025, 1, 1))
    assert in_2025 == (utc(2025, 2, 28, 8, 0), date(2025, 2, 28))
    in_2028 = next_anniversary("1992-02-29", timedelta(0), NINE, PARIS, utc(2027, 3, 1))
    assert in_2028 == (utc(2028, 2, 29, 8, 0), date(2028, 2, 29))
    # a Feb 28 birthday is not moved in a leap year
    assert next_anniversary("1991-02-28", timedelta(0), NINE, PARIS, utc(2028, 1, 1)) == (
        utc(2028, 2, 28, 8, 0),
        date(2028, 2, 28),
    )


def test_next_anniversary_offsets_across_the_year_boundary() -> None:
    # a week before a Jan 3 birthday is Dec 27 of the year before; the occurrence is the birthday
    week_before = next_anniversary("1980-01-03", timedelta(days=-7), NINE, PARIS, utc(2025, 12, 20))
    assert week_before == (utc(2025, 12, 27, 8, 0), date(2026, 1, 3))
    day_after = next_anniversary("1980-12-31", timedelta(days=1), NINE, PARIS, utc(2025, 6, 1))
    assert day_after == (utc(2026, 1, 1, 8, 0), date(2025, 12, 31))
    # already past for this year: the next one
    assert next_anniversary("1980-12-31", timedelta(days=1), NINE, PARIS, utc(2026, 1, 2)) == (
        utc(2027, 1, 1, 8, 0),
        date(2026, 12, 31),
    )


def test_next_anniversary_year_boundary_in_the_contact_zone() -> None:
    # 23:00 UTC on Dec 31 is already 08:00 on Jan 1 in Tokyo: today's 09:00 is still ahead
    found = next_anniversary("1970-01-01", timedelta(0), NINE, TOKYO, utc(2025, 12, 31, 23, 0))
    assert found == (utc(2026, 1, 1, 0, 0), date(2026, 1, 1))


@pytest.mark.parametrize("value", [None, "", "soon", "1990-13-01", 19900517, [1990, 5, 17]])
def test_next_anniversary_without_a_date(value: object) -> None:
    assert next_anniversary(value, timedelta(0), NINE, PARIS, utc(2025, 1, 1)) is None


def test_dates_read_from_attributes() -> None:
    assert parse_date(date(1990, 5, 17)) == date(1990, 5, 17)
    assert parse_date(datetime(1990, 5, 17, 23, 0)) == date(1990, 5, 17)
    assert parse_date("1990-05-17T10:00:00Z") == date(1990, 5, 17)
    assert parse_date("17/05/1990") is None
    # date_instant: a renewal date minus 7 days at 09:00, and midnight when no time is given
    assert date_instant("2025-04-03", timedelta(days=-7), NINE, PARIS) == utc(2025, 3, 27, 8, 0)
    assert date_instant("2025-03-30", timedelta(0), time(2, 30), PARIS) == utc(2025, 3, 30, 1, 0)
    assert date_instant("2025-06-01", timedelta(0), None, PARIS) == utc(2025, 5, 31, 22, 0)
    assert date_instant("never", timedelta(0), NINE, PARIS) is None


# ---------------------------------------------------------------- zones


@pytest.mark.parametrize(
    "name",
    [None, "", "Mars/Olympus", "../../etc/passwd", "/etc/localtime", "Europe", "x" * 300, "Paris"],
)
def test_zone_for_falls_back_to_the_workspace_zone(name: str | None) -> None:
    # "Europe" is a folder of the zone database and a 300-character name is too long for a file:
    # both used to raise OSError instead of falling back.
    assert zone_for(name, "Asia/Tokyo") == TOKYO
    if name:
        assert not is_valid_zone(name)


def test_zone_for_uses_a_valid_zone_and_never_fails_open() -> None:
    assert zone_for("America/New_York", "Asia/Tokyo") == NEW_YORK
    assert zone_for("UTC", "Asia/Tokyo") == ZoneInfo("UTC")
    assert zone_for(None, "Not/AZone") == ZoneInfo("UTC")
    assert zone_for("Bad/Zone", "") == ZoneInfo("UTC")
    assert is_valid_zone("Europe/Paris")


@pytest.mark.parametrize("at", [time(0, 0), time(9, 0), time(23, 30)])
def test_daily_rule_over_the_skipped_apia_day(at: time) -> None:
    """Found by the property test: a skipped local day collapses into the next, firing once."""
    _check_daily(ZoneInfo("Pacific/Apia"), datetime(2011, 12, 20, tzinfo=UTC), at, 30)
