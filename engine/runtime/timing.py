"""Local-time rules in each contact's zone, DST-safe.

A local time that does not exist (spring-forward gap) moves to the first valid instant after the
gap; an ambiguous one (fall-back overlap) is taken at its first occurrence (fold=0), so it
fires once.
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


@lru_cache(maxsize=1024)
def _zone(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name)
    # OSError: a folder of the zone database ("Europe") or a name too long for the file system.
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None


def zone_for(name: str | None, default: str) -> ZoneInfo:
    """The contact's zone, or the workspace zone when unknown or invalid (never fails open)."""
    zone = _zone(name) if name else None
    if zone is None:
        zone = _zone(default) or ZoneInfo("UTC")
    return zone


def is_valid_zone(name: str) -> bool:
    return _zone(name) is not None


def local_to_utc(day: date, at: time, zone: ZoneInfo) -> datetime:
    """The UTC instant of a local wall time; gaps move forward, overlaps take fold=0."""
    local = datetime.combine(day, at, tzinfo=zone)
    instant = local.astimezone(UTC)
    if instant.astimezone(zone).replace(tzinfo=None) == local.replace(tzinfo=None):
        return instant
    # In a gap: find the first instant whose local wall time is at or after the requested one
    # (the transition itself). Bisect on whole seconds, as transitions are: halving a float
    # interval left the answer up to a second late (03:00:01 for 02:15 on a spring-forward day).
    bounds = sorted((local.replace(fold=1).astimezone(UTC), instant))
    low, high = math.floor(bounds[0].timestamp()), math.ceil(bounds[1].timestamp())
    wanted = local.replace(tzinfo=None)
    while high - low > 1:
        mid = (low + high) // 2
        if datetime.fromtimestamp(mid, zone).replace(tzinfo=None) >= wanted:
            high = mid
        else:
            low = mid
    return datetime.fromtimestamp(high, UTC)


def next_local_time(
    now: datetime, zone: ZoneInfo, at: time | None, weekdays: frozenset[int] | None
) -> datetime:
    """The first instant ≥ now at local time `at` (any time if None) on one of `weekdays`."""
    local_now = now.astimezone(zone)
    for offset in range(0, 8 + 1):
        day = local_now.date() + timedelta(days=offset)
        if weekdays is not None and day.weekday() not in weekdays:
            continue
        if at is None:
            if offset == 0:
                return now
            return local_to_utc(day, time(0, 0), zone)
        candidate = local_to_utc(day, at, zone)
        if candidate >= now:
            return candidate
    raise ValueError("no matching local time within 8 days")  # unreachable for valid input


def parse_date(value: object) -> date | None:
    """Read a date attribute: a date, a datetime, or ISO text (``1990-05-17``); else None."""
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value[:10])
        except ValueError:
            return None
    return None


def date_instant(
    value: object, offset: timedelta, at: time | None, zone: ZoneInfo
) -> datetime | None:
    """The instant of a date attribute plus an offset, at a local time (midnight if None)."""
    day = parse_date(value)
    if day is None:
        return None
    shifted = datetime.combine(day, at or time(0, 0)) + offset
    return local_to_utc(shifted.date(), shifted.time(), zone)


def _on_year(day: date, year: int) -> date:
    if day.month == 2 and day.day == 29:
        try:
            return date(year, 2, 29)
        except ValueError:
            return date(year, 2, 28)
    return day.replace(year=year)


def next_anniversary(
    value: object, offset: timedelta, at: time, zone: ZoneInfo, after: datetime
) -> tuple[datetime, date] | None:
    """Next yearly occurrence (instant, occurrence date) at or after `after`; Feb 29 → Feb 28."""
    day = parse_date(value)
    if day is None:
        return None
    year = after.astimezone(zone).year - 1
    for y in range(year, year + 3):
        occurrence = _on_year(day, y)
        shifted = datetime.combine(occurrence, at) + offset
        instant = local_to_utc(shifted.date(), shifted.time(), zone)
        if instant >= after:
            return instant, occurrence
    return None
