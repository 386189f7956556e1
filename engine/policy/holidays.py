"""Public holidays per country, for blackout days. Computed, not listed: they never run out."""

from __future__ import annotations

from datetime import date, timedelta
from functools import lru_cache


def easter(year: int) -> date:
    """Gregorian Easter Sunday (the anonymous algorithm)."""
    a, b, c = year % 19, year // 100, year % 100
    d, e = divmod(b, 4)
    f = (b + 8) // 25
    g = (b - f + 1) // 3
    h = (19 * a + b - d - g + 15) % 30
    i, k = divmod(c, 4)
    m = (32 + 2 * e + 2 * i - h - k) % 7
    n = (a + 11 * h + 22 * m) // 451
    month, day = divmod(h + m - 7 * n + 114, 31)
    return date(year, month, day + 1)


@lru_cache(maxsize=64)
def french_holidays(year: int) -> frozenset[date]:
    """The eleven public holidays of metropolitan France."""
    sunday = easter(year)
    fixed = [(1, 1), (5, 1), (5, 8), (7, 14), (8, 15), (11, 1), (11, 11), (12, 25)]
    moving = [sunday + timedelta(days=1), sunday + timedelta(days=39), sunday + timedelta(days=50)]
    return frozenset([date(year, m, d) for m, d in fixed] + moving)


CALENDARS = {"FR": french_holidays}


def is_holiday(country: str, day: date) -> bool:
    return day in CALENDARS[country](day.year)
